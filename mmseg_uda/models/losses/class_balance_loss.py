"""Group-level class equivalence for adversarial losses (CDGA, Kim et al.,
AAAI 2021), reconstructed as a re-weighting of the adversarial BCE; see
docs/cdga.md."""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmseg_uda.registry import MODELS
from .group_statistics import all_reduce_sum, one_hot_labels, stats_dtype


@MODELS.register_module()
class ClassBalanceLoss(nn.Module):
    """Class-balanced binary cross-entropy of discriminator logits: every
    class present in the (global) batch counts equally, whatever its pixel
    count ("aligning all categories irrespective of their pixel counts").

    Reconstruction ([RECON], docs/cdga.md; CDGA with
    ``class_balance='reweight'``, the default): the paper's "group-level
    class equivalence" read as a re-weighting of the adversarial BCE. The
    other reading, an additive term, is :class:`GroupClassEquivalenceLoss`
    (``class_balance='loss'``). D outputs one logit per cell u of a coarse
    grid. With ĉ(p) a class map (source labels, or the argmax of the target
    prediction), π_c(u) the fraction of the pixels under cell u with ĉ = c
    (the one-hot map average-pooled to the grid; ignored pixels count in no
    class), N_c = Σ_u π_c(u) over the whole batch and C_present = {c: N_c >
    0},

        L_cb = (1/|C_present|) Σ_{c∈C_present} (1/N_c) Σ_u π_c(u) b(u),

    b(u) = BCE-with-logits of cell u against the constant domain label. The
    cell weights w(u) = Σ_c π_c(u) / (|C_present| N_c) sum to 1 over the
    batch. CDGA uses it in place of the plain adversarial BCE (generator and
    discriminator objectives). A leading group dimension in the logits is
    averaged: (1/K) Σ_k L_cb(D_k).

    Distributed: N_c is summed over processes and the weighted sum of BCEs
    is a differentiable sum over processes, so the loss and its gradients
    equal those of one process on the whole batch.

    Args:
        num_classes (int): number of classes of the class maps.
        ignore_index (int): label value counted in no class.
        reduce_distributed (bool): sum the statistics over processes.
        loss_weight (float): multiplier of the loss.
        loss_name (str): logged key; must contain 'loss' to be optimised.
    """

    def __init__(self,
                 num_classes: int,
                 ignore_index: int = 255,
                 reduce_distributed: bool = True,
                 loss_weight: float = 1.0,
                 loss_name: str = 'loss_class_balance'):
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reduce_distributed = reduce_distributed
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def cell_weights(self,
                     class_map: Tensor,
                     grid_size: Sequence[int],
                     ignore_index: Optional[int] = None,
                     dtype: torch.dtype = torch.float32) -> Tensor:
        """The cell weights w(u), (B, 1, h, w) for a (B, H, W) class map and
        a logit grid of size (h, w); they sum to 1 over the global batch (0
        everywhere if no pixel has a class). Computed in ``dtype`` (at
        least float32)."""
        ignore = self.ignore_index if ignore_index is None else ignore_index
        onehot, _ = one_hot_labels(class_map, self.num_classes, ignore,
                                   stats_dtype(dtype))
        frac = F.adaptive_avg_pool2d(onehot, tuple(grid_size))  # π_c(u)
        count = frac.sum(dim=(0, 2, 3))  # N_c
        if self.reduce_distributed:
            count = all_reduce_sum(count, differentiable=False)
        present = count > 0
        num_present = present.sum().clamp_min(1)
        inv = torch.where(present, 1.0 / count.clamp_min(1e-12),
                          torch.zeros_like(count)) / num_present
        return (frac * inv.view(1, -1, 1, 1)).sum(dim=1, keepdim=True)

    def forward(self,
                logits: Tensor,
                domain_label: float,
                class_map: Optional[Tensor] = None,
                cell_weight: Optional[Tensor] = None,
                ignore_index: Optional[int] = None) -> Tensor:
        """Class-balanced BCE.

        Args:
            logits (Tensor): discriminator logits (B, 1, h, w), or
                (K, B, 1, h, w) for K discriminators/groups (averaged).
            domain_label (float): the BCE target (0 source, 1 target in
                AdaptSegNet's convention).
            class_map (Tensor, optional): (B, H, W) class ids.
            cell_weight (Tensor, optional): precomputed
                :meth:`cell_weights` (B, 1, h, w); exactly one of
                ``class_map`` / ``cell_weight``.
            ignore_index (int, optional): overrides ``self.ignore_index``.
        """
        grouped = logits.dim() == 5
        if not grouped and logits.dim() != 4:
            raise ValueError(
                'ClassBalanceLoss expects (B, 1, h, w) or (K, B, 1, h, w) '
                f'logits, got {tuple(logits.shape)}')
        if (class_map is None) == (cell_weight is None):
            raise ValueError('ClassBalanceLoss: give exactly one of '
                             'class_map and cell_weight')
        if cell_weight is None:
            cell_weight = self.cell_weights(class_map, logits.shape[-2:],
                                            ignore_index, logits.dtype)
        if cell_weight.shape != logits.shape[-4:]:
            raise ValueError(
                f'ClassBalanceLoss: cell weights {tuple(cell_weight.shape)} '
                f'do not match the logits {tuple(logits.shape)}')
        target = torch.full_like(logits, float(domain_label))
        bce = F.binary_cross_entropy_with_logits(
            logits, target, reduction='none')
        dims = (-4, -3, -2, -1)
        weighted = (bce * cell_weight.to(bce.dtype)).sum(dim=dims)
        if self.reduce_distributed:
            weighted = all_reduce_sum(weighted)
        return self.loss_weight * weighted.mean()
