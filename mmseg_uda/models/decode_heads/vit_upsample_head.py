"""VFM-UDA's lightweight decode head for plain ViT encoders (Englert et al.,
"Exploring the Benefits of Vision Foundation Models for Unsupervised Domain
Adaptation", CVPRW 2024).

Reference behaviour (read, not copied): ``tue-mps/vfm-uda`` @ e154d8f,
``models/vit_variants/vit_lightweight_head.py::VITLightweightHead``
(``self.upscale`` and ``self.out``): the last ViT feature map at the patch
stride is upsampled 4× by two stride-2 transposed convolutions, refined by
a 3×3 convolution and classified by a bias-free 1×1 convolution. Built on
mmseg's ``BaseDecodeHead`` (losses, resizing to the label,
``ignore_index``).
"""
from typing import List, Optional

import torch.nn.functional as F
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from torch import Tensor, nn

from mmseg_uda.registry import MODELS


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map, computed
    channels-last with ``F.layer_norm`` as timm's ``LayerNorm2d`` that the
    official head uses: same parameters (``weight``, ``bias``), eps 1e-6, and
    the same numerics under mixed precision (autocast runs ``layer_norm`` in
    float32; mmseg's ``LayerNorm2d`` computes mean/variance by hand in the
    input dtype)."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__(num_channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(
            x.permute(0, 2, 3, 1), self.normalized_shape, self.weight,
            self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


@MODELS.register_module()
class ViTUpsampleHead(BaseDecodeHead):
    """VFM-UDA's lightweight ViT head (``VITLightweightHead``).

    On the last backbone output (``in_index=-1``, a (B, D, H/p, W/p) token
    map, D = ``in_channels``):

        ConvT(D → D/2, k 2, s 2, no bias) → LayerNorm2d → GELU
        → ConvT(D/2 → C, k 2, s 2, no bias) → LayerNorm2d
        → Conv(C → C, k 3, pad 1, no bias) → LayerNorm2d
        → 1×1 conv ``conv_seg`` (C → classes, **no bias**, N(0, 0.1) init)

    with C = ``channels`` (VFM-UDA: D/4). The logits are at stride p/4
    (3.5 for DINOv2's patch 14); mmseg's loss resizes them bilinearly to the
    label as the official network resizes them to the image. The upsampling
    stack is ``self.upscale`` with the official module order, so an official
    checkpoint's ``network.upscale.*`` keys load as ``decode_head.upscale.*``
    and ``network.out.weight`` as ``decode_head.conv_seg.weight``.

    The input of ``conv_seg`` (the output of ``upscale``) is the
    pre-classifier feature that UDA methods capture (there is no dropout:
    ``dropout_ratio`` defaults to 0 as in the official head).

    Args:
        in_channels (int): D, the ViT embedding width (ViT-B 768, ViT-L 1024).
        channels (int | None): C; None = ``in_channels // 4`` (VFM-UDA).
        mid_channels (int | None): the first transposed conv's output;
            None = ``in_channels // 2`` (VFM-UDA).
        ln_eps (float): LayerNorm2d epsilon. timm's default 1e-6.
        **kwargs: ``BaseDecodeHead`` arguments (``num_classes``,
            ``loss_decode``, ``align_corners``, ...). ``in_index`` defaults
            to -1 and ``input_transform`` must stay None (one feature map).
    """

    def __init__(self,
                 in_channels: int,
                 channels: Optional[int] = None,
                 mid_channels: Optional[int] = None,
                 ln_eps: float = 1e-6,
                 in_index: int = -1,
                 dropout_ratio: float = 0.0,
                 init_cfg: Optional[dict] = dict(
                     type='Normal', mean=0.0, std=0.1,
                     override=dict(name='conv_seg')),
                 **kwargs):
        if not isinstance(in_channels, int) or in_channels < 4:
            raise ValueError(
                'ViTUpsampleHead: in_channels must be the ViT embedding width '
                f'(an int, e.g. 768 for ViT-B), got {in_channels!r}.')
        if kwargs.get('input_transform') is not None:
            raise ValueError(
                'ViTUpsampleHead takes one feature map (the last ViT output, '
                'in_index=-1); input_transform must be None, got '
                f"{kwargs['input_transform']!r}.")
        if not isinstance(in_index, int):
            raise ValueError(
                'ViTUpsampleHead: in_index must be one int (default -1, the '
                f'last stage), got {in_index!r}.')
        channels = in_channels // 4 if channels is None else channels
        mid_channels = in_channels // 2 if mid_channels is None \
            else mid_channels
        super().__init__(
            in_channels=in_channels,
            channels=channels,
            in_index=in_index,
            dropout_ratio=dropout_ratio,
            init_cfg=init_cfg,
            **kwargs)
        # The official classifier has no bias.
        self.conv_seg = nn.Conv2d(
            channels, self.out_channels, kernel_size=1, bias=False)
        self.upscale = nn.Sequential(
            nn.ConvTranspose2d(
                in_channels, mid_channels, kernel_size=2, stride=2,
                bias=False),
            ChannelLayerNorm(mid_channels, eps=ln_eps),
            nn.GELU(),
            nn.ConvTranspose2d(
                mid_channels, channels, kernel_size=2, stride=2, bias=False),
            ChannelLayerNorm(channels, eps=ln_eps),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1,
                      bias=False),
            ChannelLayerNorm(channels, eps=ln_eps),
        )

    def _forward_feature(self, inputs: List[Tensor]) -> Tensor:
        """The ``channels``-channel feature at stride p/4 (input of the
        classifier)."""
        return self.upscale(self._transform_inputs(inputs))

    def forward(self, inputs: List[Tensor]) -> Tensor:
        return self.cls_seg(self._forward_feature(inputs))
