"""CycleAssociationLoss (PLCA, kgl-prml/Pixel-Level-Cycle-Association @
e01d77a0 ``solver/loss.py::AssociationLoss``): against a brute-force
double-loop reference, toy cases with known associations, where gradients
go, and chunked == full matrices (values and gradients)."""
import math

import pytest
import torch

from mmseg_uda.models.losses.cycle_association_loss import (
    CycleAssociationLoss, cycle_associate, spatial_aggregation)
from torch.utils._python_dispatch import TorchDispatchMode

from mmseg_uda.registry import MODELS

IGNORE = 255


# ---------------------------------------------------------------------------
# Brute-force reference: one scalar similarity at a time, Python loops.
# ---------------------------------------------------------------------------
def bf_similarity(x, y, metric):
    if metric == 'cos':
        return (x * y).sum() / (x.norm().clamp_min(1e-12) *
                                y.norm().clamp_min(1e-12))
    return (x * (torch.log(y + 1e-10) - torch.log(x + 1e-10))).sum()  # -KL


def bf_softmax(values, znorm):
    row = torch.stack(values)
    if znorm:  # mean and unbiased std, detached
        row = (row - row.mean().detach()) / (row.std().detach() + 1e-10)
    e = torch.exp(row - row.max().detach())
    return e / e.sum()


def bf_argmax(probs):
    best = 0
    for k in range(1, len(probs)):
        if probs[k].item() > probs[best].item():
            best = k
    return best


def brute_force(feat_s, feat_t, label, metric, alpha):
    """Per labelled source pixel: (pair, i, j*, i*, a_i, valid); and the
    loss -mean_{valid} max(log a_i, -100)."""
    b, _, h, w = feat_s.shape
    n_pix = h * w
    rows = []
    for n in range(b):
        src = [feat_s[n, :, p // w, p % w] for p in range(n_pix)]
        tgt = [feat_t[n, :, p // w, p % w] for p in range(n_pix)]
        if alpha > 0:
            mixed = []
            for j in range(n_pix):
                weights = bf_softmax(
                    [bf_similarity(tgt[j], tgt[k], metric)
                     for k in range(n_pix)], znorm=metric == 'cos')
                agg = sum(weights[k] * tgt[k] for k in range(n_pix))
                mixed.append((1 - alpha) * tgt[j] + alpha * agg)
            tgt = mixed
        lab = label[n].flatten()
        back = {}
        for i in range(n_pix):
            if lab[i] == IGNORE:
                continue
            p_st = bf_softmax([bf_similarity(src[i], tgt[j], metric)
                               for j in range(n_pix)], znorm=True)
            j_star = bf_argmax(p_st)
            if j_star not in back:
                back[j_star] = bf_softmax(
                    [bf_similarity(tgt[j_star], src[k], metric)
                     for k in range(n_pix)], znorm=True)
            p_ts = back[j_star]
            i_star = bf_argmax(p_ts)
            rows.append((n, i, j_star, i_star, p_st[j_star] * p_ts[i_star],
                         bool(lab[i_star] == lab[i])))
    valid = [torch.log(r[4]).clamp(min=-100) for r in rows if r[5]]
    loss = -torch.stack(valid).mean() if valid else None
    return rows, loss


def random_inputs(metric, shape=(2, 5, 4, 4), seed=0, dtype=torch.float64,
                  ignore_frac=0.2, num_classes=3, target_shape=None):
    g = torch.Generator().manual_seed(seed)
    feat_s = torch.randn(shape, generator=g, dtype=dtype)
    feat_t = torch.randn(target_shape or shape, generator=g, dtype=dtype)
    if metric == 'kl':
        feat_s, feat_t = (2 * feat_s).softmax(1), (2 * feat_t).softmax(1)
    label = torch.randint(0, num_classes, (shape[0], ) + shape[2:],
                          generator=g)
    label[torch.rand(label.shape, generator=g) < ignore_frac] = IGNORE
    return feat_s, feat_t, label


# ---------------------------------------------------------------------------
@pytest.mark.parametrize('metric', ['cos', 'kl'])
@pytest.mark.parametrize('alpha', [0.0, 0.5])
@pytest.mark.parametrize('chunk_size', [None, 3])
def test_matches_brute_force_double_loop(metric, alpha, chunk_size):
    feat_s, feat_t, label = random_inputs(metric, seed=1)
    ref_s = feat_s.clone().requires_grad_()
    ref_t = feat_t.clone().requires_grad_()
    rows, ref_loss = brute_force(ref_s, ref_t, label, metric, alpha)
    ref_loss.backward()

    got_s = feat_s.clone().requires_grad_()
    got_t = feat_t.clone().requires_grad_()
    loss_fn = CycleAssociationLoss(metric=metric, alpha=alpha,
                                   chunk_size=chunk_size)
    assoc = loss_fn.associate(got_s, got_t, label)
    loss = loss_fn(got_s, got_t, label)
    loss.backward()

    assert [(int(p), int(i)) for p, i in zip(assoc.pair, assoc.start)] == \
        [(r[0], r[1]) for r in rows]
    assert assoc.mid.tolist() == [r[2] for r in rows]
    assert assoc.end.tolist() == [r[3] for r in rows]
    assert assoc.valid.tolist() == [r[5] for r in rows]
    assert 0 < sum(r[5] for r in rows) < len(rows)  # a non-trivial V
    torch.testing.assert_close(
        assoc.log_score.exp(), torch.stack([r[4] for r in rows]).detach(),
        rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got_s.grad, ref_s.grad, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(got_t.grad, ref_t.grad, rtol=1e-7, atol=1e-10)


def one_hot_pair(metric, seed=0, num_classes=3, shape=(2, 6, 5)):
    """Source/target features that are (nearly) one-hot per class (unlabelled
    source pixels get an extra 'void' channel); every class appears in every
    target image. Target classes build the features only; they are not
    passed to the loss."""
    g = torch.Generator().manual_seed(seed)
    b, h, w = shape
    label_s = torch.randint(0, num_classes, shape, generator=g)
    label_s[torch.rand(shape, generator=g) < 0.2] = IGNORE
    label_t = torch.randint(0, num_classes, shape, generator=g)
    label_t[:, 0, :num_classes] = torch.arange(num_classes)
    feats = []
    for lab in (label_s, label_t):
        channel = torch.where(lab == IGNORE, num_classes, lab)
        one_hot = torch.nn.functional.one_hot(channel, num_classes + 1)
        feat = one_hot.permute(0, 3, 1, 2).double()
        feats.append((8 * feat).softmax(1) if metric == 'kl' else feat)
    return feats[0], feats[1], label_s, label_t


@pytest.mark.parametrize('metric', ['cos', 'kl'])
@pytest.mark.parametrize('alpha', [0.0, 0.5])
@pytest.mark.parametrize('chunk_size', [None, 4])
def test_one_hot_features_give_consistent_cycles(metric, alpha, chunk_size):
    feat_s, feat_t, label_s, label_t = one_hot_pair(metric)
    assoc = cycle_associate(feat_s, feat_t, label_s, metric, alpha,
                            chunk_size)
    labelled = torch.nonzero(label_s.flatten(1) != IGNORE)
    assert torch.equal(torch.stack([assoc.pair, assoc.start], 1), labelled)
    assert assoc.valid.all()
    # the forward hop lands on a target pixel of the same class
    lab_s, lab_t = label_s.flatten(1), label_t.flatten(1)
    assert torch.equal(lab_t[assoc.pair, assoc.mid],
                       lab_s[assoc.pair, assoc.start])


def test_inconsistent_cycles_are_ignored_not_pushed():
    """Only valid cycles enter the loss: the gradient of an invalid start
    pixel's own log a_i is not part of it."""
    feat_s, feat_t, label = random_inputs('cos', seed=3, ignore_frac=0.0)
    loss_fn = CycleAssociationLoss(chunk_size=None)
    assoc = loss_fn.associate(feat_s, feat_t, label)
    assert not assoc.valid.all() and assoc.valid.any()
    expected = -assoc.log_score[assoc.valid].clamp(min=-100).mean()
    torch.testing.assert_close(loss_fn(feat_s, feat_t, label), expected)


def test_loss_is_zero_without_valid_pixels():
    feat_s, feat_t, label = random_inputs('cos', seed=2)
    label[:] = IGNORE
    feat_s.requires_grad_()
    loss, stats = CycleAssociationLoss(chunk_size=2).loss_and_stats(
        feat_s, feat_t, label)
    loss.backward()
    assert loss.item() == 0.0 and stats['valid_ratio'].item() == 0.0
    assert torch.count_nonzero(feat_s.grad) == 0


def test_valid_ratio_and_loss_weight():
    feat_s, feat_t, label = random_inputs('kl', seed=4)
    plain = CycleAssociationLoss(metric='kl', chunk_size=None)
    weighted = CycleAssociationLoss(metric='kl', chunk_size=None,
                                    loss_weight=0.1)
    assoc = plain.associate(feat_s, feat_t, label)
    loss, stats = weighted.loss_and_stats(feat_s, feat_t, label)
    torch.testing.assert_close(loss, 0.1 * plain(feat_s, feat_t, label))
    assert stats['valid_ratio'].item() == pytest.approx(
        assoc.valid.sum().item() / assoc.num_start)


def test_gradient_reach_with_and_without_aggregation():
    """α = 0: the backward-hop term log P^{t→s}_{j* i*} reaches only the
    associated target pixels j*; with α > 0 the aggregation spreads it to
    every target pixel. (The forward-hop term reaches every target pixel
    at any α, through the softmax denominator over targets.)"""
    feat_s, feat_t, label = random_inputs('cos', shape=(1, 6, 5, 5), seed=5)
    for alpha in (0.0, 0.5):
        for chunk in (None, 4):
            tgt = feat_t.clone().requires_grad_()
            assoc = cycle_associate(feat_s, tgt, label, 'cos', alpha, chunk)
            assoc.log_p_backward.sum().backward()
            reached = tgt.grad.flatten(2)[0].abs().sum(0) > 0
            associated = torch.zeros_like(reached)
            associated[assoc.mid] = True
            assert associated.sum() < reached.numel()  # some never reached
            if alpha == 0:
                assert torch.equal(reached, associated)
            else:
                assert reached.all()
            tgt.grad = None
            loss = CycleAssociationLoss(alpha=alpha, chunk_size=chunk)
            loss(feat_s, tgt, label).backward()
            assert (tgt.grad.flatten(2)[0].abs().sum(0) > 0).all()


def test_target_labels_are_not_an_input():
    params = CycleAssociationLoss.forward.__code__.co_varnames[
        1:CycleAssociationLoss.forward.__code__.co_argcount]
    assert params == ('feat_s', 'feat_t', 'label_s')


# ---------------------------------------------------------------------------
# Chunked == full
# ---------------------------------------------------------------------------
def _run(loss_fn, feat_s, feat_t, label, seed=None):
    s = feat_s.clone().requires_grad_()
    t = feat_t.clone().requires_grad_()
    if seed is not None:
        torch.manual_seed(seed)
    assoc = loss_fn.associate(s, t, label)
    if seed is not None:
        torch.manual_seed(seed)
    loss, stats = loss_fn.loss_and_stats(s, t, label)
    loss.backward()
    return assoc, loss.detach(), stats, s.grad, t.grad


@pytest.mark.parametrize('metric', ['cos', 'kl'])
@pytest.mark.parametrize('target_shape', [None, (2, 8, 5, 6)])
def test_chunked_equals_full_float32(metric, target_shape):
    feat_s, feat_t, label = random_inputs(
        metric, shape=(2, 8, 6, 7), seed=6, dtype=torch.float32,
        num_classes=4, target_shape=target_shape)
    full = _run(CycleAssociationLoss(metric=metric, chunk_size=None),
                feat_s, feat_t, label)
    n_t = feat_t.shape[2] * feat_t.shape[3]
    for chunk in (1, 5, 16, n_t - 1, n_t, 100):
        got = _run(CycleAssociationLoss(metric=metric, chunk_size=chunk),
                   feat_s, feat_t, label)
        assert torch.equal(got[0].mid, full[0].mid), chunk
        assert torch.equal(got[0].end, full[0].end), chunk
        assert torch.equal(got[0].valid, full[0].valid), chunk
        torch.testing.assert_close(got[0].log_score, full[0].log_score,
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got[1], full[1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got[2]['valid_ratio'],
                                   full[2]['valid_ratio'])
        torch.testing.assert_close(got[3], full[3], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got[4], full[4], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('metric', ['cos', 'kl'])
def test_max_pixels_subsamples_start_pixels(metric):
    feat_s, feat_t, label = random_inputs(metric, shape=(2, 8, 6, 7), seed=7,
                                          dtype=torch.float32)
    full = _run(CycleAssociationLoss(metric=metric, chunk_size=None,
                                     max_pixels=10), feat_s, feat_t, label,
                seed=0)
    got = _run(CycleAssociationLoss(metric=metric, chunk_size=7,
                                    max_pixels=10), feat_s, feat_t, label,
               seed=0)
    assert full[0].num_start == 20  # 10 per pair
    assert torch.equal(got[0].start, full[0].start)
    assert (label.flatten(1)[got[0].pair, got[0].start] != IGNORE).all()
    torch.testing.assert_close(got[1], full[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[3], full[3], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[4], full[4], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('metric', ['cos', 'kl'])
def test_spatial_aggregation_chunked_equals_full(metric):
    feat_s, feat_t, _ = random_inputs(metric, shape=(2, 6, 5, 7), seed=8,
                                      dtype=torch.float32)
    upstream = torch.randn(feat_t.shape, generator=torch.Generator()
                           .manual_seed(0))
    results = {}
    for chunk in (None, 1, 4, 35, 64):
        x = feat_t.clone().requires_grad_()
        out = spatial_aggregation(x, metric, 0.5, chunk)
        (out * upstream).sum().backward()
        results[chunk] = (out.detach(), x.grad)
    for chunk, (out, grad) in results.items():
        torch.testing.assert_close(out, results[None][0], rtol=1e-5,
                                   atol=1e-5)
        torch.testing.assert_close(grad, results[None][1], rtol=1e-5,
                                   atol=1e-5)
    # literal definition, one pixel: x̃_j = ½x_j + ½ Σ_k W_jk x_k
    x = feat_t[0].flatten(1)
    j = 3
    sims = [bf_similarity(x[:, j], x[:, k], metric) for k in range(x.shape[1])]
    weights = bf_softmax(sims, znorm=metric == 'cos')
    expected = 0.5 * x[:, j] + 0.5 * (x * weights).sum(1)
    torch.testing.assert_close(results[4][0][0].flatten(1)[:, j], expected,
                               rtol=1e-5, atol=1e-6)


def test_half_precision_and_autocast_use_float32():
    feat_s, feat_t, label = random_inputs('cos', shape=(1, 8, 5, 5), seed=9,
                                          dtype=torch.float32)
    loss_fn = CycleAssociationLoss(chunk_size=7)
    expected = loss_fn(feat_s.bfloat16().float(), feat_t.bfloat16().float(),
                       label)
    got = loss_fn(feat_s.bfloat16(), feat_t.bfloat16(), label)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        in_autocast = loss_fn(feat_s, feat_t, label)
    assert in_autocast.dtype == torch.float32
    torch.testing.assert_close(in_autocast, loss_fn(feat_s, feat_t, label))


def test_label_is_downsampled_to_the_feature_grid():
    feat_s, feat_t, label = random_inputs('cos', shape=(2, 5, 4, 4), seed=10)
    big = label.repeat_interleave(8, 1).repeat_interleave(8, 2)
    loss_fn = CycleAssociationLoss(chunk_size=None)
    torch.testing.assert_close(loss_fn(feat_s, feat_t, big),
                               loss_fn(feat_s, feat_t, label))


def test_bad_inputs_raise_clear_errors():
    feat_s, feat_t, label = random_inputs('cos')
    with pytest.raises(ValueError, match='metric'):
        CycleAssociationLoss(metric='l2')
    with pytest.raises(ValueError, match='alpha'):
        CycleAssociationLoss(alpha=1.0)
    with pytest.raises(ValueError, match='chunk_size'):
        CycleAssociationLoss(chunk_size=0)
    with pytest.raises(ValueError, match='reduction'):
        CycleAssociationLoss(reduction='sum')
    loss_fn = CycleAssociationLoss()
    with pytest.raises(ValueError, match='same batch size'):
        loss_fn(feat_s, feat_t[:1], label)
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        loss_fn(feat_s[0], feat_t, label)
    with pytest.raises(TypeError, match='integer class ids'):
        loss_fn(feat_s, feat_t, label.float())
    with pytest.raises(ValueError, match='at least 2'):
        loss_fn(feat_s[..., :1, :1], feat_t[..., :1, :1], label[..., :1, :1])
    with pytest.raises(ValueError, match='softmax'):
        CycleAssociationLoss(metric='kl')(feat_s, feat_t, label)


def test_registered_and_builds_from_config():
    loss = MODELS.build(dict(type='CycleAssociationLoss', metric='kl',
                             chunk_size=None, loss_name='loss_ass_cls'))
    assert isinstance(loss, CycleAssociationLoss)
    assert loss.loss_name == 'loss_ass_cls' and loss.metric == 'kl'


def test_association_score_is_bounded_below_by_one_over_pixel_counts():
    """a_i is a product of two softmax maxima, so a_i >= 1/(N_s·N_t): the
    −100 clamp of nn.BCELoss never acts for top-1 association."""
    g = torch.Generator().manual_seed(0)
    feat_s = (torch.randn(2, 3, 8, 8, generator=g) * 50).softmax(1)
    feat_t = (torch.randn(2, 3, 6, 9, generator=g) * 50).softmax(1)
    label = torch.zeros(2, 8, 8, dtype=torch.long)
    for chunk in (None, 5):
        assoc = cycle_associate(feat_s, feat_t, label, 'kl', 0.5, chunk)
        assert (assoc.log_score >= -math.log(64 * 54) - 1e-5).all()
        assert (assoc.log_score <= 0).all()


# ---------------------------------------------------------------------------
# Cosine backward: both hops in one pass over S (t→s similarity = Sᵀ)
# ---------------------------------------------------------------------------
def _hop_grads(loss_fn, feat_s, feat_t, label, hops):
    """Gradients of Σ w·log P over the chosen hops ('fwd', 'bwd' or both),
    weights w fixed per start pixel, so each hop's gradient is tested on
    its own as well as summed."""
    s = feat_s.clone().requires_grad_()
    t = feat_t.clone().requires_grad_()
    assoc = loss_fn.associate(s, t, label)
    w = torch.linspace(0.5, 2.0, assoc.num_start, dtype=feat_s.dtype)
    total = 0
    if 'fwd' in hops:
        total = total + (w * assoc.log_p_forward).sum()
    if 'bwd' in hops:
        total = total + (w.flip(0) * assoc.log_p_backward).sum()
    total.backward()
    return assoc, s.grad, t.grad


class _MatmulFlops(TorchDispatchMode):
    """2·m·n·k per (m, k) × (k, n) product of every matrix-product op,
    in place or not (torch's FlopCounterMode has no entry for addmm_)."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in ('mm', 'addmm', 'addmm_', 'bmm', 'baddbmm', 'addbmm'):
            a, b = (args[1], args[2]) if name.startswith('add') or \
                name == 'baddbmm' else (args[0], args[1])
            batch = a.shape[0] if a.dim() == 3 else 1
            self.flops += 2 * batch * a.shape[-2] * a.shape[-1] * \
                b.shape[-1]
        elif 'mm' in name or 'matmul' in name or 'dot' in name:
            raise AssertionError(f'uncounted matrix product {name}')
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('hops', [('fwd', ), ('bwd', ), ('fwd', 'bwd')])
@pytest.mark.parametrize('alpha', [0.0, 0.5])
@pytest.mark.parametrize('max_pixels', [None, 9])
def test_fused_cosine_backward_equals_full_float64(hops, alpha, max_pixels):
    """The fused backward (one block of S serves the s→t rows and the t→s
    columns) against the full-matrix autograd path, in float64 to 1e-6
    relative (they differ only by rounding), with unlabelled pixels,
    subsampled start pixels (start ≠ all rows of S), N_s ≠ N_t and chunk
    sizes that do not divide N."""
    feat_s, feat_t, label = random_inputs(
        'cos', shape=(2, 6, 5, 6), seed=11, ignore_frac=0.3,
        target_shape=(2, 6, 4, 7))
    torch.manual_seed(0)
    ref = _hop_grads(CycleAssociationLoss(alpha=alpha, chunk_size=None,
                                          max_pixels=max_pixels),
                     feat_s, feat_t, label, hops)
    for chunk in (1, 7, 64):
        torch.manual_seed(0)
        got = _hop_grads(CycleAssociationLoss(alpha=alpha, chunk_size=chunk,
                                              max_pixels=max_pixels),
                         feat_s, feat_t, label, hops)
        assert torch.equal(got[0].start, ref[0].start)
        assert torch.equal(got[0].mid, ref[0].mid)
        assert torch.equal(got[0].end, ref[0].end)
        for g, r in zip(got[1:], ref[1:]):
            assert r.abs().max() > 0  # a non-vacuous comparison
            torch.testing.assert_close(g, r, rtol=1e-6,
                                       atol=1e-6 * r.abs().max().item())


def test_fused_cosine_backward_does_three_products_of_s():
    """The cosine backward recomputes S once and does the two gradient
    products once: 3·(2·N_s·N_t·C) matmul FLOPs, not 3 + 3·|targets|/N_t
    of them as with one pass per hop (a negative control: the KL level
    keeps one pass per hop and exceeds 3)."""
    c, n = 16, 48
    feat_s, feat_t, label = random_inputs(
        'cos', shape=(1, c, 6, 8), seed=3, ignore_frac=0.0,
        dtype=torch.float32)
    per_product = 2 * n * n * c
    for metric in ('cos', 'kl'):
        if metric == 'kl':
            feat_s, feat_t = feat_s.softmax(1), feat_t.softmax(1)
        s = feat_s.clone().requires_grad_()
        t = feat_t.clone().requires_grad_()
        loss_fn = CycleAssociationLoss(metric=metric, alpha=0.0,
                                       chunk_size=10)
        assoc = loss_fn.associate(s, t, label)
        num_targets = assoc.mid.unique().numel()
        assert num_targets > n // 4  # the negative control has teeth
        loss = loss_fn(s, t, label)
        with _MatmulFlops() as counter:
            loss.backward()
        products = counter.flops / per_product
        if metric == 'cos':
            assert products == pytest.approx(3.0, abs=0.01)
        else:
            assert products == pytest.approx(3 + 3 * num_targets / n,
                                             abs=0.01)
