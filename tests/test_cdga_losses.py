"""CDGA's losses and group statistics against brute-force loop references
(values and gradients), empty groups and ignore pixels."""
import math

import pytest
import torch

from mmseg_uda.models.losses.class_balance_loss import ClassBalanceLoss
from mmseg_uda.models.losses.cluster_orthogonality_loss import \
    ClusterOrthogonalityLoss
from mmseg_uda.models.losses.group_class_equivalence_loss import \
    GroupClassEquivalenceLoss
from mmseg_uda.models.losses.group_statistics import (
    group_class_distributions, one_hot_labels)
from mmseg_uda.models.losses.semantic_consistency_loss import \
    SemanticConsistencyLoss
from mmseg_uda.registry import MODELS

EPS = 1e-6


def grads(value, inputs):
    return torch.autograd.grad(value, inputs, retain_graph=True)


def assert_close_all(a, b, atol=1e-6, rtol=1e-5):
    for x, y in zip(a, b):
        assert torch.isfinite(x).all() and torch.isfinite(y).all()
        assert torch.allclose(x, y, atol=atol, rtol=rtol), (x - y).abs().max()


# ----------------------------------------------------------- reference loops
def ref_group_distributions(assign, class_prob, valid):
    """q_k[c] = Σ_p A_k(p) Y_c(p) / (Σ_p A_k(p) + ε), one pixel at a time."""
    b_n, k_n, h_n, w_n = assign.shape
    l_n = class_prob.shape[1]
    rows = []
    for k in range(k_n):
        mass = assign.new_zeros(())
        numer = [assign.new_zeros(()) for _ in range(l_n)]
        for b in range(b_n):
            for i in range(h_n):
                for j in range(w_n):
                    if valid is not None and not valid[b, i, j]:
                        continue
                    a = assign[b, k, i, j]
                    mass = mass + a
                    for c in range(l_n):
                        numer[c] = numer[c] + a * class_prob[b, c, i, j]
        rows.append(torch.stack([n / (mass + EPS) for n in numer]))
    return torch.stack(rows)


def ref_consistency(q_s, q_t, distance):
    total = 0.
    k_n, l_n = q_s.shape
    for k in range(k_n):
        d = 0.
        for c in range(l_n):
            a, b = q_s[k, c], q_t[k, c]
            if distance == 'l1':
                d = d + (a - b).abs()
            else:  # KL(a||b) + KL(b||a)
                d = d + a * (torch.log(a + EPS) - torch.log(b + EPS)) + \
                    b * (torch.log(b + EPS) - torch.log(a + EPS))
        total = total + d
    return total / k_n


def ref_orthogonality(*qs):
    total = 0.
    for q in qs:
        k_n, l_n = q.shape
        norms = [torch.sqrt(sum(q[k, c]**2 for c in range(l_n)))
                 for k in range(k_n)]
        norms = [torch.clamp(n, min=EPS) for n in norms]
        acc = 0.
        for k in range(k_n):
            for k2 in range(k_n):
                if k == k2:
                    continue
                dot = sum(q[k, c] * q[k2, c] for c in range(l_n))
                acc = acc + dot / (norms[k] * norms[k2])
        if k_n > 1:
            total = total + acc / (k_n * (k_n - 1))
    return total


def ref_class_balance(logits, label, class_map, num_classes, ignore=255):
    """Cells are square blocks of the class map (sizes divisible)."""
    b_n, _, gh, gw = logits.shape
    _, h_n, w_n = class_map.shape
    sh, sw = h_n // gh, w_n // gw
    frac = {}
    count = [0.] * num_classes
    for b in range(b_n):
        for u in range(gh):
            for v in range(gw):
                for c in range(num_classes):
                    hits = 0
                    for i in range(u * sh, (u + 1) * sh):
                        for j in range(v * sw, (v + 1) * sw):
                            hits += int(class_map[b, i, j] == c)
                    frac[b, u, v, c] = hits / (sh * sw)
                    count[c] += hits / (sh * sw)
    present = [c for c in range(num_classes) if count[c] > 0]
    total = 0.
    for c in present:
        acc = 0.
        for b in range(b_n):
            for u in range(gh):
                for v in range(gw):
                    x = logits[b, 0, u, v]
                    # BCE with logits against a constant label
                    bce = torch.nn.functional.softplus(x) - label * x
                    acc = acc + frac[b, u, v, c] * bce
        total = total + acc / count[c]
    if not present:
        return logits.sum() * 0.
    return total / len(present)


def random_inputs(seed, b=2, k=3, l_n=4, h=5, w=6, ignore_frac=0.2):
    g = torch.Generator().manual_seed(seed)
    group_logits = torch.randn(b, k, h, w, generator=g, requires_grad=True)
    class_logits = torch.randn(b, l_n, h, w, generator=g, requires_grad=True)
    label = torch.randint(0, l_n, (b, h, w), generator=g)
    label[torch.rand(b, h, w, generator=g) < ignore_frac] = 255
    return group_logits, class_logits, label


# ------------------------------------------------------------ group stats
@pytest.mark.parametrize('use_labels', [True, False])
def test_group_distributions_match_loops(use_labels):
    group_logits, class_logits, label = random_inputs(0)
    assign = group_logits.softmax(1)
    if use_labels:
        class_prob, valid = one_hot_labels(label, 4, 255)
        assert not valid.all() and valid.any()
    else:
        class_prob, valid = class_logits.softmax(1), None
    q, mass = group_class_distributions(assign, class_prob, valid, eps=EPS)
    ref = ref_group_distributions(assign, class_prob, valid)
    assert torch.allclose(q, ref, atol=1e-6)
    vmask = torch.ones_like(label, dtype=torch.bool) if valid is None \
        else valid
    assert torch.allclose(mass, (assign * vmask[:, None]).sum((0, 2, 3)))
    # gradients of a random functional of q, through A (and P)
    probe = torch.randn(q.shape, generator=torch.Generator().manual_seed(1))
    inputs = [group_logits] + ([] if use_labels else [class_logits])
    assert_close_all(grads((q * probe).sum(), inputs),
                     grads((ref * probe).sum(), inputs))


def test_group_distributions_ignore_pixels_do_not_count():
    group_logits, _, label = random_inputs(2)
    assign = group_logits.softmax(1)
    onehot, valid = one_hot_labels(label, 4, 255)
    q, _ = group_class_distributions(assign, onehot, valid)
    # changing the assignment of ignored pixels changes nothing
    other = torch.where(valid[:, None], assign, torch.rand_like(assign))
    q2, _ = group_class_distributions(other, onehot, valid)
    assert torch.allclose(q, q2)
    # q_k sums to (almost) 1 for every non-empty group
    assert torch.allclose(q.sum(1), torch.ones(3), atol=1e-4)


def test_empty_group_gives_zero_histogram_and_finite_gradients():
    g = torch.Generator().manual_seed(3)
    raw = torch.rand(2, 3, 4, 4, generator=g)
    raw[:, 1] = 0.0  # group 1 holds no pixel at all
    raw = raw / raw.sum(1, keepdim=True)
    assign = raw.clone().requires_grad_(True)
    prob = torch.rand(2, 4, 4, 4, generator=g).softmax(1).requires_grad_(True)
    q_s, _ = group_class_distributions(assign, prob)
    q_t, _ = group_class_distributions(assign.flip(0), prob)
    assert torch.equal(q_s[1], torch.zeros(4))
    for loss in (SemanticConsistencyLoss(distance='l1'),
                 SemanticConsistencyLoss(distance='sym_kl'),
                 ClusterOrthogonalityLoss()):
        value = loss(q_s, q_t)
        assert torch.isfinite(value)
        for grad in grads(value, [assign, prob]):
            assert torch.isfinite(grad).all()
    # a fully empty domain (all pixels ignored): q = 0, losses finite
    zero = torch.zeros(3, 4, requires_grad=True)
    for loss in (SemanticConsistencyLoss(distance='sym_kl'),
                 ClusterOrthogonalityLoss()):
        value = loss(zero, zero * 1.0)
        assert torch.isfinite(value)
        assert torch.isfinite(grads(value, [zero])[0]).all()


def test_one_hot_labels_rejects_out_of_range_ids():
    label = torch.tensor([[[0, 5], [255, 1]]])
    with pytest.raises(ValueError, match=r'class ids \[5\]'):
        one_hot_labels(label, 4, 255)


# ------------------------------------------------------ semantic consistency
@pytest.mark.parametrize('distance', ['l1', 'sym_kl'])
def test_semantic_consistency_matches_loops(distance):
    group_logits, class_logits, label = random_inputs(4)
    onehot, valid = one_hot_labels(label, 4, 255)
    q_s, _ = group_class_distributions(group_logits.softmax(1), onehot,
                                       valid)
    q_t, _ = group_class_distributions(
        group_logits.flip(0).softmax(1), class_logits.softmax(1))
    loss = SemanticConsistencyLoss(distance=distance, loss_weight=0.3)
    value = loss(q_s, q_t)
    ref = 0.3 * ref_consistency(q_s, q_t, distance)
    assert torch.allclose(value, ref, atol=1e-6)
    assert_close_all(grads(value, [group_logits, class_logits]),
                     grads(ref, [group_logits, class_logits]))
    assert loss.loss_name == 'loss_consist'


def test_semantic_consistency_zero_iff_equal_and_symmetric():
    q = torch.rand(3, 5).softmax(1)
    for distance in ('l1', 'sym_kl'):
        loss = SemanticConsistencyLoss(distance=distance)
        assert loss(q, q.clone()).abs() < 1e-7
        r = torch.rand(3, 5).softmax(1)
        assert loss(q, r) > 0
        assert torch.allclose(loss(q, r), loss(r, q))


def test_semantic_consistency_bad_arguments():
    with pytest.raises(ValueError, match="'l1' or 'sym_kl'"):
        SemanticConsistencyLoss(distance='l2')
    with pytest.raises(ValueError, match='different shapes'):
        SemanticConsistencyLoss()(torch.rand(3, 4), torch.rand(2, 4))
    with pytest.raises(ValueError, match=r'\(K, L\)'):
        SemanticConsistencyLoss()(torch.rand(3), torch.rand(3))


# -------------------------------------------------------------- orthogonality
def test_orthogonality_matches_loops():
    group_logits, class_logits, label = random_inputs(5, k=4)
    onehot, valid = one_hot_labels(label, 4, 255)
    q_s, _ = group_class_distributions(group_logits.softmax(1), onehot,
                                       valid)
    q_t, _ = group_class_distributions(group_logits.softmax(1),
                                       class_logits.softmax(1))
    loss = ClusterOrthogonalityLoss(loss_weight=0.7)
    value = loss(q_s, q_t)
    ref = 0.7 * ref_orthogonality(q_s, q_t)
    assert torch.allclose(value, ref, atol=1e-6)
    assert_close_all(grads(value, [group_logits, class_logits]),
                     grads(ref, [group_logits, class_logits]))
    assert loss.loss_name == 'loss_orth'


def test_orthogonality_extremes():
    loss = ClusterOrthogonalityLoss()
    disjoint = torch.tensor([[0.5, 0.5, 0, 0], [0, 0, 1., 0], [0, 0, 0, 1.]])
    assert loss(disjoint).abs() < 1e-7
    same = torch.tensor([[0.2, 0.8]] * 3)
    assert torch.allclose(loss(same), torch.tensor(1.0))
    assert torch.allclose(loss(same, same), torch.tensor(2.0))  # per domain
    one = torch.rand(1, 4, requires_grad=True)
    value = loss(one)
    assert value == 0 and grads(value, [one])[0].abs().sum() == 0


# --------------------------------------------------------------- class balance
def class_balance_inputs(seed, ignore_frac=0.2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 1, 2, 3, generator=g, requires_grad=True)
    class_map = torch.randint(0, 3, (2, 8, 12), generator=g)  # class 3 absent
    class_map[torch.rand(2, 8, 12, generator=g) < ignore_frac] = 255
    return logits, class_map


@pytest.mark.parametrize('label', [0.0, 1.0])
def test_class_balance_matches_loops(label):
    logits, class_map = class_balance_inputs(6)
    loss = ClassBalanceLoss(num_classes=5, loss_weight=2.0)
    value = loss(logits, label, class_map)
    ref = 2.0 * ref_class_balance(logits, label, class_map, 5)
    assert torch.allclose(value, ref, atol=1e-6)
    assert_close_all(grads(value, [logits]), grads(ref, [logits]))
    weight = loss.cell_weights(class_map, (2, 3))
    assert torch.allclose(weight.sum(), torch.tensor(1.0))
    assert loss.loss_name == 'loss_class_balance'


def test_class_balance_every_present_class_weighs_the_same():
    """One class covering 7/8 of the pixels and one covering 1/8 contribute
    equally: the loss is the mean of the per-class BCEs."""
    class_map = torch.zeros(1, 8, 8, dtype=torch.long)
    class_map[0, :, 7] = 1  # last column: class 1 (1/8 of the pixels)
    class_map[0, 0, 0] = 255
    # one cell per column (grid 1 x 8); logits differ per class
    logits = torch.zeros(1, 1, 1, 8)
    logits[..., 7] = 3.0
    logits[..., :7] = -1.0
    loss = ClassBalanceLoss(num_classes=2)
    value = loss(logits, 1.0, class_map)
    sp = torch.nn.functional.softplus
    expected = 0.5 * ((sp(torch.tensor(-1.0)) - (-1.0)) +
                      (sp(torch.tensor(3.0)) - 3.0))
    assert torch.allclose(value, expected, atol=1e-6)


def test_class_balance_groups_are_averaged_and_all_ignored_is_zero():
    logits, class_map = class_balance_inputs(7)
    loss = ClassBalanceLoss(num_classes=5)
    stacked = torch.stack([logits, 2 * logits])
    value = loss(stacked, 0.0, class_map)
    ref = 0.5 * (loss(logits, 0.0, class_map) +
                 loss(2 * logits, 0.0, class_map))
    assert torch.allclose(value, ref)
    weight = loss.cell_weights(class_map, (2, 3))
    assert torch.allclose(loss(stacked, 0.0, cell_weight=weight), value)
    ignored = torch.full_like(class_map, 255)
    zero = loss(logits, 1.0, ignored)
    assert zero == 0 and torch.isfinite(grads(zero, [logits])[0]).all()


def test_class_balance_bad_arguments():
    logits, class_map = class_balance_inputs(8)
    loss = ClassBalanceLoss(num_classes=5)
    with pytest.raises(ValueError, match='exactly one'):
        loss(logits, 0.0)
    with pytest.raises(ValueError, match=r'\(B, 1, h, w\)'):
        loss(logits[0], 0.0, class_map)
    with pytest.raises(ValueError, match='do not match'):
        loss(logits, 0.0, cell_weight=torch.ones(2, 1, 3, 3))


def test_losses_are_registered():
    for name in ('SemanticConsistencyLoss', 'ClusterOrthogonalityLoss',
                 'ClassBalanceLoss'):
        assert MODELS.get(name) is not None
    built = MODELS.build(dict(type='ClassBalanceLoss', num_classes=3))
    assert isinstance(built, ClassBalanceLoss)
    assert math.isclose(built.loss_weight, 1.0)


# ------------------------------------------------- group class equivalence
def ref_class_equivalence(a_s, y_s, valid, a_t, p_t):
    """L_ce one pixel at a time: r^d_c(k) = Σ_p A_k Y_c / (Σ_p Y_c + ε),
    mean over the classes present in both domains of ‖r^s_c − r^t_c‖₁."""
    b_n, k_n, h_n, w_n = a_s.shape
    l_n = y_s.shape[1]

    def column(assign, cls, c, mask):
        mass = assign.new_zeros(())
        joint = [assign.new_zeros(()) for _ in range(k_n)]
        for b in range(b_n):
            for i in range(h_n):
                for j in range(w_n):
                    if mask is not None and not mask[b, i, j]:
                        continue
                    y = cls[b, c, i, j]
                    mass = mass + y
                    for k in range(k_n):
                        joint[k] = joint[k] + assign[b, k, i, j] * y
        return [x / (mass + EPS) for x in joint], mass

    total, present = 0., 0
    argmax_t = p_t.argmax(1)
    for c in range(l_n):
        r_s, mass_s = column(a_s, y_s, c, valid)
        r_t, _ = column(a_t, p_t, c, None)
        if mass_s > 0 and bool((argmax_t == c).any()):
            total = total + sum((x - y).abs() for x, y in zip(r_s, r_t))
            present += 1
    return total / max(present, 1)


def class_equivalence_inputs(seed, l_n=5):
    group_s, class_s, label = random_inputs(seed, l_n=l_n)
    group_t, class_t, _ = random_inputs(seed + 100, l_n=l_n)
    label[label == 1] = 255  # class 1 absent from the source labels
    onehot, valid = one_hot_labels(label, l_n, 255)
    return group_s, group_t, class_t, onehot, valid


def test_class_equivalence_matches_loops():
    group_s, group_t, class_t, onehot, valid = class_equivalence_inputs(11)
    a_s, a_t = group_s.softmax(1), group_t.softmax(1)
    p_t = class_t.softmax(1)
    loss = GroupClassEquivalenceLoss(loss_weight=0.3)
    value = loss(a_s, onehot, a_t, p_t, valid_source=valid)
    ref = 0.3 * ref_class_equivalence(a_s, onehot, valid, a_t, p_t)
    assert torch.allclose(value, ref, atol=1e-6)
    inputs = [group_s, group_t, class_t]
    assert_close_all(grads(value, inputs), grads(ref, inputs))
    # gradients reach both assignments and the target prediction
    assert all(g.abs().sum() > 0 for g in grads(value, inputs))
    assert loss.loss_name == 'loss_class_equiv'


def test_class_equivalence_presence_rule():
    """Classes absent from the source labels (class 1) or never the target
    argmax are left out: changing their target columns changes nothing."""
    group_s, group_t, class_t, onehot, valid = class_equivalence_inputs(12)
    a_s, a_t = group_s.softmax(1), group_t.softmax(1)
    p_t = class_t.softmax(1)
    loss = GroupClassEquivalenceLoss()
    r_s, mass_s = loss.class_group_distributions(a_s, onehot, valid)
    assert mass_s[1] == 0 and torch.allclose(r_s.sum(1)[mass_s > 0],
                                             torch.ones(4), atol=1e-5)
    r_t, _ = loss.class_group_distributions(a_t, p_t)
    per_class = (r_s - r_t).abs().sum(1)
    value = loss(a_s, onehot, a_t, p_t, valid_source=valid)
    hit = torch.bincount(p_t.argmax(1).flatten(), minlength=5) > 0
    keep = (mass_s > 0) & hit
    assert not keep[1] and keep.sum() >= 2
    assert torch.allclose(value, per_class[keep].mean())
    # negative control: averaging over every class gives another value
    assert not torch.allclose(value, per_class.mean())
    # identical domains: zero
    zero = loss(a_s, onehot, a_s, onehot + 0.0, valid_source=valid)
    assert zero.abs() < 1e-6


def test_class_equivalence_weighs_every_class_alike():
    """Negative control for the class imbalance: a frequent class (15 of 16
    pixels) and a rare one (1 of 16) grouped differently across domains
    contribute alike per class (the rare one's whole column moves), while
    the per-group histogram term weighs the rare pixel less."""
    h = w = 4
    label = torch.zeros(1, h, w, dtype=torch.long)
    label[0, 3, 3] = 1  # rare class
    onehot, valid = one_hot_labels(label, 2, 255)
    a_s = torch.zeros(1, 2, h, w)
    a_s[:, 0] = 1.0  # source: everything in group 0

    def target_assign(flip_rare):
        a = a_s.clone()
        if flip_rare:  # rare-class pixel goes to group 1 in the target
            a[0, :, 3, 3] = torch.tensor([0.0, 1.0])
        else:  # one frequent-class pixel goes to group 1
            a[0, :, 0, 0] = torch.tensor([0.0, 1.0])
        return a

    loss = GroupClassEquivalenceLoss()
    rare = loss(a_s, onehot, target_assign(True), onehot, valid)
    frequent = loss(a_s, onehot, target_assign(False), onehot, valid)
    # the rare class's whole column moves (|r_s − r_t|₁ = 2) -> 2 / 2 = 1;
    # one of 15 frequent pixels moves -> (2/15) / 2
    assert torch.allclose(rare, torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(frequent, torch.tensor(1 / 15), atol=1e-5)
    q_s, _ = group_class_distributions(a_s, onehot, valid)
    q_rare, _ = group_class_distributions(target_assign(True), onehot, valid)
    assert SemanticConsistencyLoss()(q_s, q_rare) < rare


def test_class_equivalence_bad_inputs_and_registry():
    loss = MODELS.build(dict(type='GroupClassEquivalenceLoss',
                             loss_weight=0.1))
    assert isinstance(loss, GroupClassEquivalenceLoss)
    a, y = torch.rand(1, 3, 4, 4), torch.rand(1, 2, 4, 4)
    with pytest.raises(ValueError, match='same batch and size'):
        loss(a, y[..., :2], a, y)
    with pytest.raises(ValueError, match='disagree'):
        loss(a, y, a[:, :2], y)
