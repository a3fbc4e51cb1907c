"""Output-space adversarial alignment: AdaptSegNet and AdvEnt (single level).

These are the pipeline's proof of the second-optimizer mechanism and the
baseline that CDGA generalises to group-level alignment.
"""
import math
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from mmseg.models.utils import resize
from torch import Tensor, nn

from mmseg_uda.registry import MODELS
from ..utils.functional import frozen_call
from ..utils.precision import float32_island
from .base import BaseUDAMethod
from .context import UDAContext


@float32_island
def self_information_map(prob: Tensor) -> Tensor:
    """ADVENT's weighted self-information I = −P·log2(P) / log2(C)
    (Vu et al., CVPR 2019, Eq. 2 input of the discriminator;
    ``advent/utils/func.py::prob_2_entropy``), in float32 under autocast
    (P·log P of probabilities near 0)."""
    num_classes = prob.shape[1]
    return -prob * torch.log2(prob + 1e-30) / math.log2(num_classes)


def domain_bce(logits: Tensor, label: float,
               weight: Optional[Tensor] = None) -> Tensor:
    """Binary cross-entropy of discriminator logits against a constant
    domain label (AdaptSegNet's ``BCEWithLogitsLoss``), mean over cells, or
    a weighted sum when ``weight`` (same shape, summing to 1) is given."""
    target = torch.full_like(logits, label)
    if weight is None:
        return F.binary_cross_entropy_with_logits(logits, target)
    per_cell = F.binary_cross_entropy_with_logits(
        logits, target, reduction='none')
    return (per_cell * weight).sum()


@MODELS.register_module()
class AdaptSegNet(BaseUDAMethod):
    """Single-level output-space adversarial adaptation (Tsai et al.,
    CVPR 2018; ``wasidennis/AdaptSegNet: train_gta2cityscapes_multi.py``).

    Generator step: L_adv = BCE(D(P_t), source_label), weighted by
    ``lambda_adv`` (0.001), gradients reach the segmentor only (D is called
    with detached parameters). Discriminator step:
    L_D = ½·[BCE(D(P_s), source_label) + BCE(D(P_t), target_label)] on
    detached predictions. Source label 0, target label 1 (AdaptSegNet).
    P is the softmax of the logits bilinearly upsampled to the input size
    (``upsample_to_input``), as in AdaptSegNet/ADVENT.

    Args:
        num_classes (int): channels of the segmentation output.
        lambda_adv (float): weight of the adversarial generator loss.
        discriminator (dict): discriminator config (``in_channels`` is set
            to ``num_classes``).
        upsample_to_input (bool): upsample logits to the input size before
            the softmax (AdaptSegNet) or keep the head's stride (cheaper).
    """
    student_domains = ('source', 'target')
    d_input = 'softmax'

    def __init__(self,
                 num_classes: int = 19,
                 lambda_adv: float = 0.001,
                 discriminator: dict = dict(type='FCDiscriminator', ndf=64),
                 upsample_to_input: bool = True,
                 source_label: float = 0.0,
                 target_label: float = 1.0,
                 loss_prefix: Optional[str] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(loss_prefix=loss_prefix, init_cfg=init_cfg)
        self.num_classes = num_classes
        self.lambda_adv = lambda_adv
        self.upsample_to_input = upsample_to_input
        self.source_label = source_label
        self.target_label = target_label
        self.discriminator = MODELS.build(
            dict(discriminator, in_channels=num_classes))

    def discriminators(self) -> List[nn.Module]:
        return [self.discriminator]

    def output_map(self, ctx: UDAContext, domain: str) -> Tensor:
        """The discriminator's input for one domain (with gradients),
        cached on the domain's student outputs."""
        out = ctx.student_outputs(domain)
        key = f'{type(self).__name__}.{self.d_input}'
        if key not in out.extras:
            if out.logits.shape[1] != self.num_classes:
                raise ValueError(
                    f'{type(self).__name__}: num_classes={self.num_classes} '
                    f'but the decode head outputs {out.logits.shape[1]} '
                    'channels.')
            logits = out.logits
            if self.upsample_to_input:
                logits = resize(
                    logits,
                    size=ctx.img(domain).shape[-2:],
                    mode='bilinear',
                    align_corners=ctx.student.align_corners)
            prob = float32_island(F.softmax)(logits, dim=1)
            out.extras[key] = prob if self.d_input == 'softmax' \
                else self_information_map(prob)
        return out.extras[key]

    def loss(self, ctx: UDAContext) -> Dict[str, Tensor]:
        d_out = frozen_call(self.discriminator, self.output_map(ctx, 'target'))
        return {
            'loss_adv': self.lambda_adv * domain_bce(d_out, self.source_label)
        }

    def discriminator_loss(self, ctx: UDAContext) -> Dict[str, Tensor]:
        d_src = self.discriminator(self.output_map(ctx, 'source').detach())
        d_tgt = self.discriminator(self.output_map(ctx, 'target').detach())
        loss = 0.5 * (domain_bce(d_src, self.source_label) +
                      domain_bce(d_tgt, self.target_label))
        return {'loss_D': loss}


@MODELS.register_module()
class AdvEnt(AdaptSegNet):
    """AdvEnt (Vu et al., CVPR 2019; ``valeoai/ADVENT``): AdaptSegNet's
    adversarial scheme on the weighted self-information maps
    I = −P·log2(P)/log2(C) instead of the softmax (single level,
    λ_adv = 0.001, D: Adam 1e-4, betas (0.9, 0.99))."""
    d_input = 'entropy'
