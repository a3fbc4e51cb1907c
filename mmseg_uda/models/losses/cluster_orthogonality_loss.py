"""Orthogonality of the groups' class distributions (CDGA, Kim et al.,
AAAI 2021; reconstructed as docs/cdga.md)."""
from torch import Tensor, nn

from mmseg_uda.registry import MODELS
from .semantic_consistency_loss import _check_group_distributions


@MODELS.register_module()
class ClusterOrthogonalityLoss(nn.Module):
    """Different groups must hold different categories ("distinct class
    distributions for different groups").

    Reconstruction (docs/cdga.md, [RECON]): for each domain d
    given, with q^d_k the class distribution of group k,

        L_orth = Σ_d (1/(K(K−1))) Σ_{k≠k'} cos(q^d_k, q^d_k'),
        cos(a, b) = a·b / (max(‖a‖, ε) · max(‖b‖, ε)).

    Minimum 0 when the groups' class supports are disjoint. An empty group
    (q ≈ 0) has cosine ≈ 0 with every other group and finite gradients
    (ε). With K = 1 there are no pairs and the loss is 0.

    Args:
        eps (float): lower bound of the norms in the cosine.
        loss_weight (float): λ_orth (0.1 in the reconstruction).
        loss_name (str): logged key; must contain 'loss' to be optimised.
    """

    def __init__(self,
                 eps: float = 1e-6,
                 loss_weight: float = 1.0,
                 loss_name: str = 'loss_orth'):
        super().__init__()
        self.eps = eps
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def forward(self, *group_distributions: Tensor) -> Tensor:
        """One (K, L) group class distribution per domain (e.g. ``q_source,
        q_target``); returns the weighted sum over domains."""
        if not group_distributions:
            raise ValueError('ClusterOrthogonalityLoss needs at least one '
                             '(K, L) group class distribution')
        _check_group_distributions(type(self).__name__, *group_distributions)
        total = 0.
        for q in group_distributions:
            num_groups = q.shape[0]
            if num_groups < 2:
                total = total + q.sum() * 0.
                continue
            # ‖q_k‖ clamped below by ε without a sqrt at 0 (finite grads)
            norm = q.pow(2).sum(dim=1, keepdim=True).clamp_min(
                self.eps**2).sqrt()
            unit = q / norm
            gram = unit @ unit.t()
            off_diagonal = gram.sum() - gram.diagonal().sum()
            total = total + off_diagonal / (num_groups * (num_groups - 1))
        return self.loss_weight * total
