"""PLCA's auxiliary losses: the distributed Lovász-Softmax (== mmseg's
single-process Lovász, also across 2 gloo processes), the LSR regulariser
against its definition, and the association loss's global mean across
processes."""
import pytest
import torch
import torch.nn.functional as F

import mmseg_uda  # noqa: F401  (compat fixes before mmseg in spawned workers)
from dist_utils import run_distributed
from mmseg_uda.models.losses.cycle_association_loss import \
    CycleAssociationLoss
from mmseg_uda.models.losses.distributed_lovasz_loss import \
    DistributedLovaszSoftmaxLoss
from mmseg_uda.models.losses.uniform_cross_entropy_regularizer import \
    UniformCrossEntropyRegularizer
from mmseg_uda.registry import MODELS

from mmseg.models.losses.lovasz_loss import lovasz_softmax  # noqa: E402


def lovasz_batch(seed=0, batch=4, classes=5, size=(6, 7)):
    g = torch.Generator().manual_seed(seed)
    # float32: mmseg's lovasz_grad (the reference) computes in float32
    logits = torch.randn((batch, classes) + size, generator=g)
    label = torch.randint(0, classes - 1, (batch, ) + size, generator=g)
    label[torch.rand(label.shape, generator=g) < 0.15] = 255
    label[0] = torch.where(label[0] == 255, 255, 0)  # class 0 only, image 0
    # class 3 only in the first half (rank 0 of the 2-process test): the
    # 'present' classes are those of the global batch
    label[batch // 2:][label[batch // 2:] == 3] = 2
    return logits, label


@pytest.mark.parametrize('classes', ['present', 'all', [0, 2, 4]])
def test_lovasz_equals_mmseg_single_process(classes):
    logits, label = lovasz_batch()
    ours_in = logits.clone().requires_grad_()
    ref_in = logits.clone().requires_grad_()
    loss = DistributedLovaszSoftmaxLoss(classes=classes, loss_weight=3.0)(
        ours_in, label)
    ref = 3.0 * lovasz_softmax(
        F.softmax(ref_in, 1), label, classes=classes, per_image=False,
        ignore_index=255)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(ours_in.grad, ref_in.grad)
    assert ours_in.grad.abs().sum() > 0


def test_lovasz_without_labelled_pixels_is_zero():
    logits, label = lovasz_batch()
    label[:] = 255
    logits.requires_grad_()
    loss = DistributedLovaszSoftmaxLoss()(logits, label)
    loss.backward()
    assert loss.item() == 0 and torch.count_nonzero(logits.grad) == 0


def test_lovasz_bad_inputs():
    logits, label = lovasz_batch()
    with pytest.raises(ValueError, match='same size'):
        DistributedLovaszSoftmaxLoss()(logits[:, :, :3], label)
    with pytest.raises(ValueError, match='outside'):
        DistributedLovaszSoftmaxLoss(classes=[7])(logits, label)
    with pytest.raises(ValueError, match='present'):
        DistributedLovaszSoftmaxLoss(classes='some')


def test_uniform_cross_entropy_regularizer_against_definition():
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64) *
              torch.tensor([1.0, 30.0]).view(2, 1, 1, 1).double())
    threshold = 10.0
    x = logits.clone().requires_grad_()
    loss = UniformCrossEntropyRegularizer(threshold, loss_weight=0.01)(x)
    loss.backward()
    # loops: ℓ_p = −(1/K) Σ_k log softmax(z_p)_k, loss = mean sg(ℓ/T−1)·ℓ
    y = logits.clone().requires_grad_()
    terms, squares = [], []
    for b in range(2):
        for i in range(3):
            for j in range(5):
                z = y[b, :, i, j]
                log_p = z - torch.log(torch.exp(z).sum())
                ell = -log_p.mean()
                terms.append((ell / threshold - 1).detach() * ell)
                squares.append((ell - threshold)**2 / (2 * threshold))
    expected = 0.01 * torch.stack(terms).mean()
    torch.testing.assert_close(loss, expected)
    (0.01 * torch.stack(squares).mean()).backward()
    torch.testing.assert_close(x.grad, y.grad)
    # over-confident pixels (ℓ > T, the ×30 image) are pushed back
    ell = -F.log_softmax(logits, 1).mean(1)
    assert (ell[1] > threshold).any() and (ell[0] < threshold).all()
    no_threshold = UniformCrossEntropyRegularizer(0.0)(logits)
    torch.testing.assert_close(no_threshold, ell.mean())


def test_auxiliary_losses_are_registered():
    assert isinstance(MODELS.build(dict(type='DistributedLovaszSoftmaxLoss')),
                      DistributedLovaszSoftmaxLoss)
    reg = MODELS.build(dict(type='UniformCrossEntropyRegularizer'))
    assert reg.threshold == 10.0 and reg.loss_name == 'loss_lsr'


# ---------------------------------------------------------------------------
# Two gloo processes
# ---------------------------------------------------------------------------
def association_batch():
    g = torch.Generator().manual_seed(1)
    feat_s = torch.randn(4, 6, 5, 5, generator=g, dtype=torch.float64)
    feat_t = torch.randn(4, 6, 5, 5, generator=g, dtype=torch.float64)
    label = torch.randint(0, 3, (4, 5, 5), generator=g)
    label[torch.rand(label.shape, generator=g) < 0.2] = 255
    return feat_s, feat_t, label


def association_reference():
    feat_s, feat_t, alabel = association_batch()
    s = feat_s.clone().requires_grad_()
    ass = CycleAssociationLoss(chunk_size=4, reduction='global_mean')
    value, stats = ass.loss_and_stats(s, feat_t, alabel)
    value.backward()
    return dict(ass=value.detach(), ass_grad=s.grad,
                ratio=stats['valid_ratio'])


def distributed_worker(rank, world_size, out):
    part = slice(2 * rank, 2 * rank + 2)
    logits, label = lovasz_batch()
    # ranks hold different numbers of labelled pixels
    if rank == 1:
        label[2, :2] = 255
    x = logits[part].clone().requires_grad_()
    lov = DistributedLovaszSoftmaxLoss()(x, label[part])
    lov.backward()
    feat_s, feat_t, alabel = association_batch()
    s = feat_s[part].clone().requires_grad_()
    ass = CycleAssociationLoss(chunk_size=4, reduction='global_mean')
    value, stats = ass.loss_and_stats(s, feat_t[part], alabel[part])
    value.backward()
    torch.save(
        dict(lovasz=lov.detach(), lovasz_grad=x.grad, ass=value.detach(),
             ass_grad=s.grad, ratio=stats['valid_ratio'], label=label),
        f'{out}.{rank}')


def test_two_processes_equal_one_process(tmp_path):
    out = str(tmp_path / 'rank')
    run_distributed(distributed_worker, 2, out)
    ranks = [torch.load(f'{out}.{r}') for r in range(2)]
    # the single-process run sees the batch rank 1 modified
    logits, _ = lovasz_batch()
    label = ranks[1]['label']
    x = logits.clone().requires_grad_()
    lov = DistributedLovaszSoftmaxLoss()(x, label)
    lov.backward()
    assert (label[:2] == 3).any() and not (label[2:] == 3).any()
    ref = association_reference()
    # Lovász: every rank reports the global value; DDP's mean of the
    # per-rank gradients is the global gradient.
    for r, res in enumerate(ranks):
        torch.testing.assert_close(res['lovasz'], lov.detach())
        torch.testing.assert_close(res['lovasz_grad'] / 2,
                                   x.grad[2 * r:2 * r + 2])
    # association 'global_mean': mean of per-rank values and gradients
    torch.testing.assert_close((ranks[0]['ass'] + ranks[1]['ass']) / 2,
                               ref['ass'])
    torch.testing.assert_close(
        torch.cat([ranks[0]['ass_grad'], ranks[1]['ass_grad']]) / 2,
        ref['ass_grad'])
    for res in ranks:
        torch.testing.assert_close(res['ratio'], ref['ratio'])
