"""Group-level class equivalence as an additive loss term (CDGA, Kim et al.,
AAAI 2021, reconstructed; see docs/cdga.md)."""
from typing import Optional

import torch
from torch import Tensor, nn

from mmseg_uda.registry import MODELS
from .group_statistics import all_reduce_sum, stats_dtype


@MODELS.register_module()
class GroupClassEquivalenceLoss(nn.Module):
    """Every class must be split over the K groups in the same way in both
    domains, each class counting equally whatever its pixel count.

    CDGA's abstract announces "a loss so as to solve a class imbalance
    problem" and its contribution list a "group-level class equivalence"
    that aligns "all categories irrespective of their pixel counts"; the
    formula itself was not available, so this term is a reconstruction
    ([RECON]). Per domain d, with A^d_k(p) the soft group assignment and
    Y^d_c(p) the class map (source: one-hot labels over valid pixels;
    target: the softmax prediction P^t), summed over the global batch:

        M^d(k, c) = Σ_p A^d_k(p) Y^d_c(p)        (group × class mass)
        N^d_c     = Σ_p Y^d_c(p)                 (class mass)
        r^d_c(k)  = M^d(k, c) / (N^d_c + ε)      (class c over the groups)

        L_ce = (1/|C*|) Σ_{c∈C*} ‖r^s_c − r^t_c‖₁,

    C* = the classes present in both domains (a source label, and at least
    one target pixel whose argmax P^t is c); L_ce = 0 if C* is empty.

    Why this form: the semantic-consistency term compares the rows of M
    normalised per group (q_k = M(k, ·)/Σ_c M(k, c)), and the adversarial
    BCE averages over pixels; in both a class enters with its pixel share,
    so road, building, vegetation and sky (most of GTA5 and Cityscapes
    pixels) decide the alignment and a misgrouped pole or traffic sign
    barely moves either. L_ce normalises M per column instead: each class
    present in both domains becomes a distribution over the groups with unit
    mass and weight 1/|C*|, and the term asks that its pixels fall into the
    same groups in both domains. It is added to the segmentor objective (G
    through P^t and C's input, C through A), next to the adversarial loss,
    which stays a plain mean; :class:`ClassBalanceLoss` is the other
    reading of the same sentence (a class-balanced re-weighting of the
    adversarial BCE, no extra term).

    Distributed: M and N are summed over processes (differentiably) and the
    presence counts without gradients, so the loss equals that of one
    process on the whole batch.

    Args:
        eps (float): ε of the per-class normalisation.
        reduce_distributed (bool): sum the statistics over processes.
        loss_weight (float): λ_ce (0.1 in the reconstruction, as λ_sc and
            λ_orth).
        loss_name (str): logged key; must contain 'loss' to be optimised.
    """

    def __init__(self,
                 eps: float = 1e-6,
                 reduce_distributed: bool = True,
                 loss_weight: float = 1.0,
                 loss_name: str = 'loss_class_equiv'):
        super().__init__()
        self.eps = eps
        self.reduce_distributed = reduce_distributed
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def class_group_distributions(self, assign: Tensor, class_map: Tensor,
                                  valid: Optional[Tensor] = None):
        """r (L, K): each class's distribution over the groups, and the
        class masses N (L,), both summed over the global batch.

        ``assign`` (B, K, H, W), ``class_map`` (B, L, H, W) one-hot labels
        or class probabilities, ``valid`` (B, H, W) bool or None."""
        if assign.dim() != 4 or class_map.dim() != 4 or \
                assign.shape[0] != class_map.shape[0] or \
                assign.shape[2:] != class_map.shape[2:]:
            raise ValueError(
                f'{type(self).__name__} expects (B, K, H, W) assignments and '
                '(B, L, H, W) class maps of the same batch and size, got '
                f'{tuple(assign.shape)} and {tuple(class_map.shape)}')
        dtype = stats_dtype(assign.dtype)
        with torch.autocast(assign.device.type, enabled=False):
            assign, class_map = assign.to(dtype), class_map.to(dtype)
            if valid is not None:
                class_map = class_map * valid.unsqueeze(1).to(dtype)
            joint = torch.einsum('bkhw,blhw->lk', assign, class_map)
            mass = class_map.sum(dim=(0, 2, 3))
        stats = torch.cat([joint, mass.unsqueeze(1)], dim=1)
        if self.reduce_distributed:
            stats = all_reduce_sum(stats)
        joint, mass = stats[:, :-1], stats[:, -1]
        return joint / (mass.unsqueeze(1) + self.eps), mass

    def forward(self,
                assign_source: Tensor,
                class_source: Tensor,
                assign_target: Tensor,
                prob_target: Tensor,
                valid_source: Optional[Tensor] = None) -> Tensor:
        """Weighted L_ce.

        Args:
            assign_source, assign_target (Tensor): A^s, A^t (B, K, H, W).
            class_source (Tensor): Y^s (B, L, H, W), one-hot source labels
                (or the source prediction).
            prob_target (Tensor): P^t (B, L, H, W).
            valid_source (Tensor, optional): (B, H, W) bool, False at
                ignored source pixels.
        """
        if assign_source.shape[1] != assign_target.shape[1] or \
                class_source.shape[1] != prob_target.shape[1]:
            raise ValueError(
                f'{type(self).__name__}: source and target disagree on the '
                f'number of groups or classes: {tuple(assign_source.shape)}, '
                f'{tuple(class_source.shape)} vs {tuple(assign_target.shape)},'
                f' {tuple(prob_target.shape)}')
        r_s, mass_s = self.class_group_distributions(
            assign_source, class_source, valid_source)
        r_t, _ = self.class_group_distributions(assign_target, prob_target)
        num_classes = prob_target.shape[1]
        hits = torch.bincount(
            prob_target.detach().argmax(1).flatten(),
            minlength=num_classes).to(mass_s.dtype)
        if self.reduce_distributed:
            hits = all_reduce_sum(hits, differentiable=False)
        present = (mass_s.detach() > 0) & (hits > 0)
        per_class = (r_s - r_t).abs().sum(dim=1)
        total = (per_class * present.to(per_class.dtype)).sum()
        return self.loss_weight * total / present.sum().clamp_min(1)
