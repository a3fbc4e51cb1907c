"""Semantic consistency of groups across domains (CDGA, Kim et al.,
AAAI 2021; reconstructed as docs/cdga.md)."""
import torch
from torch import Tensor, nn

from mmseg_uda.registry import MODELS


def _check_group_distributions(name: str, *dists: Tensor) -> None:
    for q in dists:
        if q.dim() != 2:
            raise ValueError(
                f'{name} expects (K, L) group class distributions, got shape '
                f'{tuple(q.shape)}')
    if len({tuple(q.shape) for q in dists}) > 1:
        raise ValueError(
            f'{name}: group class distributions of different shapes '
            f'{[tuple(q.shape) for q in dists]}')


@MODELS.register_module()
class SemanticConsistencyLoss(nn.Module):
    """Each group must hold the same categories in the source and the target
    domain ("consistent category distributions across domains").

    Reconstruction (docs/cdga.md, [RECON]): with q^s_k, q^t_k the
    class distributions of group k in each domain (docs/cdga.md step 4,
    :func:`group_class_distributions`),

        L_sc = (1/K) Σ_k d(q^s_k, q^t_k)

    ``distance='l1'`` (default): d(a, b) = ‖a − b‖₁.
    ``distance='sym_kl'``: d(a, b) = KL(a‖b) + KL(b‖a)
    = Σ_c (a_c − b_c)(log(a_c + ε) − log(b_c + ε)) (ε keeps empty classes
    and empty groups finite).

    Args:
        distance (str): ``'l1'`` or ``'sym_kl'``.
        eps (float): ε inside the logarithms of ``sym_kl``.
        loss_weight (float): λ_sc (0.1 in the reconstruction).
        loss_name (str): logged key; must contain 'loss' to be optimised.
    """

    def __init__(self,
                 distance: str = 'l1',
                 eps: float = 1e-6,
                 loss_weight: float = 1.0,
                 loss_name: str = 'loss_consist'):
        super().__init__()
        if distance not in ('l1', 'sym_kl'):
            raise ValueError("SemanticConsistencyLoss: distance must be 'l1' "
                             f"or 'sym_kl', got {distance!r}")
        self.distance = distance
        self.eps = eps
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def forward(self, q_source: Tensor, q_target: Tensor) -> Tensor:
        """``q_source``, ``q_target``: (K, L) group class distributions of
        the two domains; returns the weighted scalar loss."""
        _check_group_distributions(type(self).__name__, q_source, q_target)
        diff = q_source - q_target
        if self.distance == 'l1':
            per_group = diff.abs().sum(dim=1)
        else:
            log_ratio = torch.log(q_source + self.eps) - \
                torch.log(q_target + self.eps)
            per_group = (diff * log_ratio).sum(dim=1)
        return self.loss_weight * per_group.mean()
