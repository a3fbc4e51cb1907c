"""Lovász-Softmax over the pixels of all processes (Berman et al., CVPR 2018),
as PLCA computes it on the source batch (kgl-prml/Pixel-Level-Cycle-
Association @ e01d77a0; see docs/plca.md).

PLCA's multi-GPU Lovász (``solver/lov_softmax_multigpu.py::
lovasz_softmax_flat``) broadcasts every rank's probabilities and labels,
sorts the errors of the whole multi-GPU batch, and lets each rank take the
dot product on its own pixels. This module does the same with an
``all_gather`` and differs in one respect, on purpose: the official code
averages over the classes present on *its own* rank and skips classes
absent locally, so the sum over ranks is not the Lovász loss of the global
batch; here every rank uses the classes of the global batch, which makes the
result exactly the single-process Lovász of the concatenated batch (tested
with 2 gloo processes).
"""
from typing import List, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.dist import all_gather, get_rank, get_world_size
from mmseg.models.losses.lovasz_loss import lovasz_grad
from torch import Tensor, nn

from mmseg_uda.registry import MODELS


def _all_gather_rows(x: Tensor) -> List[Tensor]:
    """``all_gather`` of tensors whose first dimension differs across
    processes (padded to the largest, then trimmed)."""
    if get_world_size() == 1:
        return [x]
    size = torch.tensor([x.shape[0]], device=x.device)
    sizes = [int(s.item()) for s in all_gather(size)]
    padded = x.new_zeros((max(sizes), ) + tuple(x.shape[1:]))
    padded[:x.shape[0]] = x
    return [g[:n] for g, n in zip(all_gather(padded), sizes)]


def global_lovasz_softmax(probs: Tensor,
                          labels: Tensor,
                          classes: Union[str, Sequence[int]] = 'present',
                          ignore_index: int = 255) -> Tensor:
    """Lovász-Softmax of the pixels of all processes.

    Args:
        probs (Tensor): (P, C) class probabilities of this process's pixels.
        labels (Tensor): (P, ) class ids, ``ignore_index`` for void.
        classes: 'present' (classes in the labels of all processes), 'all',
            or a list of class ids to average over.
        ignore_index (int): void label.

    Returns:
        Tensor: a scalar whose value is the Lovász loss of the global batch
        on every process and whose gradient w.r.t. this process's ``probs``
        is ``world_size`` times the gradient of the global loss w.r.t. them,
        so DDP's gradient average yields exactly the gradient of the global
        loss.
    """
    world_size = get_world_size()
    keep = labels != ignore_index
    probs, labels = probs[keep], labels[keep]
    gathered_probs = _all_gather_rows(probs.detach())
    gathered_labels = _all_gather_rows(labels)
    offset = sum(p.shape[0] for p in gathered_probs[:get_rank()])
    all_probs = torch.cat(gathered_probs)
    all_labels = torch.cat(gathered_labels)
    num_classes = probs.shape[1]
    if classes == 'present':
        class_ids = torch.unique(all_labels).tolist()
    elif classes == 'all':
        class_ids = list(range(num_classes))
    else:
        class_ids = list(classes)
    if not class_ids:
        return probs.sum() * 0.0
    local, value = _lovasz_terms(probs, labels, all_probs, all_labels,
                                 class_ids, offset)
    local = local * world_size
    # Value of the global loss, gradient world_size · d(local share).
    return local - local.detach() + value


def _lovasz_terms(probs: Tensor, labels: Tensor, all_probs: Tensor,
                  all_labels: Tensor, class_ids: List[int], offset: int):
    """Mean over ``class_ids`` of the Lovász extension of the Jaccard loss
    (Berman et al. 2018, Eq. 8-9 with the softmax errors of Eq. 10), over
    the gathered pixels, and the same mean with this process's pixels only
    dotted with the global Lovász gradient weights.

    The weights (constants) are computed class by class without autograd;
    this process's errors of all classes are one (P, C) tensor, so the
    backward builds one (P, C) gradient instead of one per class (the cost
    of a ``probs[:, c]`` loop).
    """
    weights = all_probs.new_empty(all_probs.shape[0], len(class_ids))
    value = all_probs.new_zeros(())
    with torch.no_grad():
        for j, c in enumerate(class_ids):
            fg_all = (all_labels == c).to(all_probs.dtype)
            errors_all = (fg_all - all_probs[:, c]).abs()
            order = torch.sort(
                errors_all, descending=True, stable=True).indices
            weights[order, j] = lovasz_grad(fg_all[order]).to(weights.dtype)
            value += torch.dot(errors_all, weights[:, j])
    index = torch.tensor(class_ids, device=probs.device)
    fg = (labels[:, None] == index[None, :]).to(probs.dtype)
    errors = (fg - probs.index_select(1, index)).abs()
    local = (errors * weights[offset:offset + errors.shape[0]]).sum(0)
    return local.mean(), value / len(class_ids)


@MODELS.register_module()
class DistributedLovaszSoftmaxLoss(nn.Module):
    """Lovász-Softmax on softmax(logits), computed over the pixels of all
    processes with one global sort (``per_image=False``), as PLCA's
    ``lovasz_softmax_multigpu`` (see the module docstring for the one
    deliberate difference). Without a process group it is mmseg's
    ``lovasz_softmax(..., per_image=False)``.

    Args:
        classes: 'present' (default, PLCA), 'all', or a list of class ids.
        ignore_index (int): void label.
        loss_weight (float): multiplier.
        loss_name (str): key in a losses dict.
    """

    def __init__(self,
                 classes: Union[str, Sequence[int]] = 'present',
                 ignore_index: int = 255,
                 loss_weight: float = 1.0,
                 loss_name: str = 'loss_lovasz'):
        super().__init__()
        if isinstance(classes, str) and classes not in ('present', 'all'):
            raise ValueError("classes must be 'present', 'all' or a list of "
                             f'class ids, got {classes!r}')
        self.classes = classes
        self.ignore_index = ignore_index
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def forward(self, cls_score: Tensor, label: Tensor) -> Tensor:
        """
        Args:
            cls_score (Tensor): logits (B, C, H, W) at the label's size.
            label (Tensor): (B, H, W) class ids.
        """
        if cls_score.dim() != 4 or label.shape != (cls_score.shape[0], ) + \
                tuple(cls_score.shape[2:]):
            raise ValueError(
                'DistributedLovaszSoftmaxLoss expects logits (B, C, H, W) and '
                f'labels (B, H, W) of the same size; got '
                f'{tuple(cls_score.shape)} and {tuple(label.shape)}. Resize '
                'the logits to the label size first.')
        num_classes = cls_score.shape[1]
        if not isinstance(self.classes, str) and any(
                not 0 <= c < num_classes for c in self.classes):
            raise ValueError(f'classes {list(self.classes)} outside [0, '
                             f'{num_classes})')
        with torch.autocast(device_type=cls_score.device.type, enabled=False):
            logits = cls_score if cls_score.dtype in (
                torch.float32, torch.float64) else cls_score.float()
            probs = F.softmax(logits, dim=1)
            probs = probs.permute(0, 2, 3, 1).reshape(-1, num_classes)
            loss = global_lovasz_softmax(probs, label.reshape(-1).long(),
                                         self.classes, self.ignore_index)
        return self.loss_weight * loss
