"""T2SContrastiveLoss against a brute-force reference (loops over queries
and negatives), gradients, empty classes, keys without gradient, AMP."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmseg_uda.models.losses.t2s_contrastive_loss import T2SContrastiveLoss


def unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64),
                       dim=-1)


def reference_loss(queries, labels, prototypes, negatives, tau,
                   weights=None, counts=None, num_present=None):
    """Python loops over classes, queries and negatives (float64)."""
    num_classes = prototypes.shape[0]
    per_class, present = [], 0
    total = 0.0
    for c in range(num_classes):
        members = [i for i in range(len(labels)) if int(labels[i]) == c]
        n = len(members) if counts is None else int(counts[c])
        if n == 0:
            per_class.append(0.0)
            continue
        present += 1
        acc = 0.0
        for i in members:
            q = queries[i]
            pos = math.exp(float(torch.dot(q, prototypes[c])) / tau)
            neg = sum(
                math.exp(float(torch.dot(q, k)) / tau) for k in negatives[i])
            acc += -math.log(pos / (pos + neg))
        per_class.append(acc / n)
        w = 1.0 if weights is None else float(weights[c])
        total += w * acc / n
    present = present if num_present is None else num_present
    return total / max(present, 1), per_class


def differentiable_reference(queries, labels, prototypes, negatives, tau,
                             weights):
    """Per-query loop in torch (for reference gradients)."""
    num_classes = prototypes.shape[0]
    terms = {c: [] for c in range(num_classes)}
    for i in range(queries.shape[0]):
        q = queries[i]
        c = int(labels[i])
        logits = [torch.dot(q, prototypes[c]) / tau] + [
            torch.dot(q, k) / tau for k in negatives[i]
        ]
        logits = torch.stack(logits)
        terms[c].append(torch.logsumexp(logits, 0) - logits[0])
    present = [c for c in terms if terms[c]]
    return sum(weights[c] * torch.stack(terms[c]).mean()
               for c in present) / len(present)


@pytest.mark.parametrize('recompute', [True, False])
@pytest.mark.parametrize('chunk', [1024, 3])
def test_loss_value_and_gradient_match_brute_force(recompute, chunk):
    num_classes, dim, n_neg, tau = 4, 8, 5, 0.1
    labels = torch.tensor([0, 0, 1, 3, 3, 3, 1])
    queries = unit(7, dim, seed=1).requires_grad_()
    protos = unit(num_classes, dim, seed=2)
    negatives = unit(7, n_neg, dim, seed=3)
    weights = torch.tensor([0.5, 1.5, 3.0, 1.0], dtype=torch.float64)
    loss_fn = T2SContrastiveLoss(
        temperature=tau, chunk_size=chunk, recompute_negatives=recompute)
    out = loss_fn(queries, labels, protos, negatives, class_weights=weights)
    ref, ref_per_class = reference_loss(queries.detach(), labels, protos,
                                        negatives, tau, weights)
    assert out.loss.dtype == torch.float32
    assert out.loss.item() == pytest.approx(ref, rel=1e-5)
    assert torch.allclose(out.per_class_loss.double(),
                          torch.tensor(ref_per_class, dtype=torch.float64),
                          rtol=1e-5)
    assert out.class_mask.tolist() == [True, True, False, True]
    # cosine similarities logged per query
    assert torch.allclose(out.pos_sim.double(),
                          (queries.detach() * protos[labels]).sum(1),
                          atol=1e-6)
    out.loss.backward()
    q_ref = queries.detach().clone().requires_grad_()
    differentiable_reference(q_ref, labels, protos, negatives, tau,
                             weights).backward()
    assert torch.allclose(queries.grad, q_ref.grad, rtol=1e-4, atol=1e-6)


def test_bank_with_index_equals_dense_negatives():
    bank = unit(20, 8, seed=4)
    index = torch.randint(0, 20, (6, 7), generator=torch.Generator()
                          .manual_seed(0))
    labels = torch.tensor([0, 1, 1, 2, 0, 2])
    protos = unit(3, 8, seed=5)
    q1 = unit(6, 8, seed=6).requires_grad_()
    q2 = q1.detach().clone().requires_grad_()
    loss_fn = T2SContrastiveLoss(chunk_size=4)
    a = loss_fn(q1, labels, protos, bank, negative_index=index)
    b = loss_fn(q2, labels, protos, bank[index])
    assert torch.allclose(a.loss, b.loss)
    a.loss.backward()
    b.loss.backward()
    assert torch.allclose(q1.grad, q2.grad)


def test_keys_receive_no_gradient():
    labels = torch.tensor([0, 1, 1])
    queries = unit(3, 4, seed=7).float().requires_grad_()
    protos = unit(2, 4, seed=8).float().requires_grad_()
    bank = unit(10, 4, seed=9).float().requires_grad_()
    index = torch.tensor([[0, 1], [2, 3], [4, 9]])
    out = T2SContrastiveLoss()(queries, labels, protos, bank, index)
    out.loss.backward()
    assert queries.grad is not None and queries.grad.abs().sum() > 0
    assert protos.grad is None and bank.grad is None


def test_global_counts_and_present_split_the_loss_exactly():
    """Two halves of the queries with the global counts and |P| sum to the
    loss of all queries (the per-process share in distributed training)."""
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    queries = unit(6, 8, seed=10)
    protos = unit(3, 8, seed=11)
    negatives = unit(6, 4, 8, seed=12)
    weights = torch.tensor([1.2, 0.3, 1.5])
    loss_fn = T2SContrastiveLoss()
    full = loss_fn(queries, labels, protos, negatives, class_weights=weights)
    counts = torch.bincount(labels, minlength=3)
    parts = [
        loss_fn(queries[s], labels[s], protos, negatives[s],
                class_weights=weights, class_query_counts=counts,
                num_present=3) for s in (slice(0, 2), slice(2, 6))
    ]
    assert torch.allclose(parts[0].loss + parts[1].loss, full.loss)
    assert torch.allclose(parts[0].per_class_loss + parts[1].per_class_loss,
                          full.per_class_loss)


def test_empty_classes_and_no_queries_give_no_nan():
    loss_fn = T2SContrastiveLoss()
    protos = unit(5, 4, seed=13)
    labels = torch.tensor([3, 3])
    queries = unit(2, 4, seed=14).float().requires_grad_()
    out = loss_fn(queries, labels, protos, unit(2, 3, 4, seed=15))
    assert torch.isfinite(out.per_class_loss).all()
    assert out.class_mask.tolist() == [False, False, False, True, False]
    assert out.per_class_loss[[0, 1, 2, 4]].abs().sum() == 0
    assert out.loss.item() == pytest.approx(out.per_class_loss[3].item())
    empty = torch.zeros(0, 4, requires_grad=True)
    out = loss_fn(empty, torch.zeros(0, dtype=torch.long), protos,
                  torch.zeros(0, 3, 4))
    assert out.loss.item() == 0.0 and not out.class_mask.any()
    out.loss.backward()
    assert torch.isfinite(empty.grad).all()


def test_logits_in_float32_under_autocast():
    """Half-precision inputs under autocast: logits in float32, no overflow
    even with a tiny temperature, value close to the float64 reference."""
    labels = torch.tensor([0, 1, 1, 0])
    q64 = unit(4, 16, seed=16)
    protos = unit(2, 16, seed=17)
    negs = unit(4, 6, 16, seed=18)
    loss_fn = T2SContrastiveLoss(temperature=0.01)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = loss_fn(q64.bfloat16().requires_grad_(), labels,
                      protos.bfloat16(), negs.bfloat16())
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    ref, _ = reference_loss(q64.bfloat16().double(), labels,
                            protos.bfloat16().double(),
                            negs.bfloat16().double(), 0.01)
    assert out.loss.item() == pytest.approx(ref, rel=1e-3)


def test_bad_inputs_raise_clear_errors():
    loss_fn = T2SContrastiveLoss()
    q, protos = unit(3, 4), unit(2, 4)
    with pytest.raises(ValueError, match='dimension'):
        loss_fn(q, torch.zeros(3, dtype=torch.long), unit(2, 5),
                unit(3, 2, 4))
    with pytest.raises(ValueError, match='outside'):
        loss_fn(q, torch.tensor([0, 1, 2]), protos, unit(3, 2, 4))
    with pytest.raises(ValueError, match=r'\(Q, N, D\)'):
        loss_fn(q, torch.zeros(3, dtype=torch.long), protos, unit(2, 2, 4))
    with pytest.raises(ValueError, match='temperature'):
        T2SContrastiveLoss(temperature=0)
