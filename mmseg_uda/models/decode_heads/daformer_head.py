"""DAFormer decoder (Hoyer et al., CVPR 2022, §3.2 "context-aware feature
fusion").

Reference behaviour (read, not copied): ``lhoyer/DAFormer``
``mmseg/models/decode_heads/daformer_head.py`` (``DAFormerHead``,
``ASPPWrapper``) with ``configs/_base_/models/daformer_sepaspp_mitb5.py``.
Built from mmseg/mmcv parts: ``ASPPModule``/``DepthwiseSeparableASPPModule``,
``ConvModule`` and mmseg's ``resize``.
"""
from typing import List, Sequence

import torch
from mmcv.cnn import ConvModule
from mmseg.models.decode_heads.aspp_head import ASPPModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.decode_heads.sep_aspp_head import \
    DepthwiseSeparableASPPModule
from mmseg.models.utils import resize
from torch import Tensor, nn

from mmseg_uda.registry import MODELS


class MLPEmbedding(nn.Module):
    """SegFormer's per-level embedding: one linear layer applied to every
    token of a (B, C, H, W) map, returned as (B, E, H, W) (DAFormer's
    ``embed_cfg=dict(type='mlp')``; the parameter is named ``proj`` as
    there)."""

    def __init__(self, in_channels: int, embed_dims: int):
        super().__init__()
        self.proj = nn.Linear(in_channels, embed_dims)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        tokens = self.proj(x.flatten(2).transpose(1, 2))
        return tokens.transpose(1, 2).reshape(b, -1, h, w)


class ASPPFusion(nn.Module):
    """DAFormer's fusion module (``ASPPWrapper``): parallel ASPP branches on
    the concatenated embeddings (depthwise-separable for dilation > 1 when
    ``separable``, 1×1 conv for dilation 1), an optional image-pooling
    branch, concatenation and a 3×3 ``ConvModule`` bottleneck, each with
    norm + activation."""

    def __init__(self, in_channels: int, channels: int,
                 dilations: Sequence[int], separable: bool, pool: bool,
                 norm_cfg, act_cfg, align_corners: bool):
        super().__init__()
        self.align_corners = align_corners
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            ConvModule(in_channels, channels, 1, norm_cfg=norm_cfg,
                       act_cfg=act_cfg)) if pool else None
        aspp = DepthwiseSeparableASPPModule if separable else ASPPModule
        self.aspp_modules = aspp(
            dilations=tuple(dilations),
            in_channels=in_channels,
            channels=channels,
            conv_cfg=None,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg)
        self.bottleneck = ConvModule(
            (len(dilations) + int(pool)) * channels,
            channels,
            kernel_size=3,
            padding=1,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg)

    def forward(self, x: Tensor) -> Tensor:
        outs = []
        if self.image_pool is not None:
            outs.append(
                resize(
                    self.image_pool(x),
                    size=x.shape[2:],
                    mode='bilinear',
                    align_corners=self.align_corners))
        outs.extend(self.aspp_modules(x))
        return self.bottleneck(torch.cat(outs, dim=1))


@MODELS.register_module()
class DAFormerHead(BaseDecodeHead):
    """DAFormer decode head.

    Each selected encoder stage (MiT-B5: 64, 128, 320, 512 channels) is
    embedded to ``embed_dims`` channels by a linear layer
    (:class:`MLPEmbedding`), bilinearly resized to the first stage's size
    (stride 4), concatenated, and fused into ``channels`` channels by
    :class:`ASPPFusion` (``fusion='aspp'``: DAFormer's context-aware fusion,
    dilations (1, 6, 12, 18), depthwise separable, no image pooling) or a
    1×1 ``ConvModule`` (``fusion='conv'``: DAFormer Tab. 7 "SegFormer with
    C_e = 256"). ``cls_seg`` (dropout → 1×1 ``conv_seg``) gives the logits,
    so the fused feature is the input of ``dropout`` (what the UDA pipeline
    captures as the pre-classifier feature).

    Args:
        embed_dims (int | Sequence[int]): embedding channels per level.
            DAFormer 256.
        fusion (str): ``'aspp'`` or ``'conv'``.
        fusion_dilations (Sequence[int]): ASPP dilations. DAFormer
            (1, 6, 12, 18).
        fusion_separable (bool): depthwise-separable ASPP convs. DAFormer
            True (``sep=True``).
        fusion_pool (bool): image-pooling branch. DAFormer False.
        **kwargs: ``BaseDecodeHead`` arguments; ``input_transform`` is fixed
            to ``'multiple_select'`` and ``align_corners`` must be False
            (DAFormer asserts it).
    """

    def __init__(self,
                 embed_dims=256,
                 fusion: str = 'aspp',
                 fusion_dilations: Sequence[int] = (1, 6, 12, 18),
                 fusion_separable: bool = True,
                 fusion_pool: bool = False,
                 **kwargs):
        if 'input_transform' in kwargs:
            raise TypeError("DAFormerHead fixes input_transform to "
                            "'multiple_select'; do not pass it.")
        super().__init__(input_transform='multiple_select', **kwargs)
        if self.align_corners:
            raise ValueError('DAFormerHead requires align_corners=False '
                             '(as DAFormer).')
        if fusion not in ('aspp', 'conv'):
            raise ValueError(f"fusion must be 'aspp' or 'conv', got "
                             f'{fusion!r}')
        num_levels = len(self.in_index)
        if isinstance(embed_dims, int):
            embed_dims = [embed_dims] * num_levels
        if len(embed_dims) != num_levels:
            raise ValueError(f'{len(embed_dims)} embed_dims for '
                             f'{num_levels} input levels')
        self.embed_layers = nn.ModuleDict({
            str(i): MLPEmbedding(c, e)
            for i, c, e in zip(self.in_index, self.in_channels, embed_dims)
        })
        if fusion == 'aspp':
            self.fuse_layer = ASPPFusion(
                sum(embed_dims),
                self.channels,
                dilations=fusion_dilations,
                separable=fusion_separable,
                pool=fusion_pool,
                norm_cfg=self.norm_cfg,
                act_cfg=self.act_cfg,
                align_corners=self.align_corners)
        else:
            self.fuse_layer = ConvModule(
                sum(embed_dims),
                self.channels,
                1,
                norm_cfg=self.norm_cfg,
                act_cfg=self.act_cfg)

    def _forward_feature(self, inputs: List[Tensor]) -> Tensor:
        """The fused ``channels``-channel feature at the first level's
        resolution (before dropout and the classifier)."""
        feats = self._transform_inputs(inputs)
        size = feats[0].shape[2:]
        embedded = []
        for i, feat in zip(self.in_index, feats):
            x = self.embed_layers[str(i)](feat)
            if x.shape[2:] != size:
                x = resize(
                    x,
                    size=size,
                    mode='bilinear',
                    align_corners=self.align_corners)
            embedded.append(x)
        return self.fuse_layer(torch.cat(embedded, dim=1))

    def forward(self, inputs: List[Tensor]) -> Tensor:
        return self.cls_seg(self._forward_feature(inputs))
