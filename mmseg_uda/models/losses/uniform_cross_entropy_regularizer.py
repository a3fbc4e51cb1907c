"""PLCA's "LSR" prediction regulariser (kgl-prml/Pixel-Level-Cycle-Association
@ e01d77a0, ``solver/utils.py::LSR``)."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmseg_uda.registry import MODELS


@MODELS.register_module()
class UniformCrossEntropyRegularizer(nn.Module):
    """Cross-entropy to the uniform distribution, pulled towards a threshold
    (``kgl-prml/Pixel-Level-Cycle-Association: solver/utils.py::LSR``).

    Per pixel p with logits z_p over K classes,
    ℓ_p = −(1/K) Σ_k log softmax(z_p)_k (the cross-entropy between the
    uniform distribution and the prediction); the loss is
    ``mean_p[ sg(ℓ_p / T − 1) · ℓ_p ]`` (sg = stop-gradient), whose gradient
    equals that of mean_p (ℓ_p − T)² / (2T): ℓ_p is pulled towards T from
    both sides, i.e. extreme over-confidence is penalised. With
    ``threshold <= 0`` the loss is mean_p ℓ_p (the official fallback).
    PLCA applies it with T = 10 and weight 0.01 to the stride-8 logits of
    the source and of the target batch.

    Args:
        threshold (float): T (``TRAIN.LSR_THRES`` = 10).
        loss_weight (float): multiplier.
        loss_name (str): key in a losses dict.
    """

    def __init__(self,
                 threshold: float = 10.0,
                 loss_weight: float = 1.0,
                 loss_name: str = 'loss_lsr'):
        super().__init__()
        self.threshold = threshold
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def forward(self, logits: Tensor) -> Tensor:
        """
        Args:
            logits (Tensor): (B, K, ...) class logits.
        """
        if logits.dim() < 2 or logits.shape[1] < 2:
            raise ValueError('UniformCrossEntropyRegularizer expects logits '
                             f'(B, K, ...) with K >= 2, got '
                             f'{tuple(logits.shape)}')
        with torch.autocast(device_type=logits.device.type, enabled=False):
            if logits.dtype not in (torch.float32, torch.float64):
                logits = logits.float()
            uniform_ce = -F.log_softmax(logits, dim=1).mean(1)
            if self.threshold > 0:
                loss = ((uniform_ce / self.threshold - 1.0).detach() *
                        uniform_ce).mean()
            else:
                loss = uniform_ce.mean()
        return self.loss_weight * loss
