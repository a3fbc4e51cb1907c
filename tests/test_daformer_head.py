"""DAFormerHead: structure (DAFormer's sep-ASPP fusion), output shapes, the
fused feature the UDA pipeline captures, and a reference computation."""
import pytest
import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule, DepthwiseSeparableConvModule

import mmseg_uda.models.decode_heads.daformer_head  # noqa: F401 (registers)
from mmseg_uda.models.utils import decode_head_forward
from mmseg_uda.registry import MODELS

IN_CHANNELS = [4, 8, 12, 16]


def head_cfg(**kwargs):
    cfg = dict(
        type='DAFormerHead',
        in_channels=IN_CHANNELS,
        in_index=[0, 1, 2, 3],
        channels=16,
        embed_dims=8,
        dropout_ratio=0.1,
        num_classes=5,
        norm_cfg=dict(type='BN', requires_grad=True),
        align_corners=False)
    cfg.update(kwargs)
    return cfg


def mit_like_features(batch=2, size=64, seed=0):
    """Stage outputs at strides 4, 8, 16, 32 of a size×size image."""
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, c, size // s, size // s, generator=g)
        for c, s in zip(IN_CHANNELS, (4, 8, 16, 32))
    ]


def build(**kwargs):
    torch.manual_seed(0)
    head = MODELS.build(head_cfg(**kwargs))
    head.init_weights()
    return head


def test_structure_is_daformer_sepaspp():
    head = build()
    assert head.input_transform == 'multiple_select'
    for i, c in enumerate(IN_CHANNELS):
        proj = head.embed_layers[str(i)].proj
        assert isinstance(proj, torch.nn.Linear)
        assert (proj.in_features, proj.out_features) == (c, 8)
    fuse = head.fuse_layer
    assert fuse.image_pool is None
    branches = list(fuse.aspp_modules)
    assert len(branches) == 4
    # dilation 1: plain 1x1 ConvModule; others: depthwise-separable 3x3
    assert isinstance(branches[0], ConvModule)
    assert branches[0].conv.kernel_size == (1, 1)
    assert branches[0].conv.in_channels == 4 * 8
    for branch, d in zip(branches[1:], (6, 12, 18)):
        assert isinstance(branch, DepthwiseSeparableConvModule)
        dw = branch.depthwise_conv.conv
        assert dw.dilation == (d, d) and dw.padding == (d, d)
        assert dw.groups == dw.in_channels == 32
        assert branch.depthwise_conv.with_norm
        assert branch.pointwise_conv.conv.out_channels == 16
    assert fuse.bottleneck.conv.in_channels == 4 * 16
    assert fuse.bottleneck.conv.kernel_size == (3, 3)
    assert fuse.bottleneck.with_norm and fuse.bottleneck.with_activation
    assert isinstance(head.dropout, torch.nn.Dropout2d)
    assert head.dropout.p == 0.1
    assert head.conv_seg.in_channels == 16


def test_logits_at_stride_4_and_captured_feature_is_fused_256_like():
    head = build()
    feats = mit_like_features()
    head.train()
    logits, feat = decode_head_forward(head, feats, with_feat=True)
    assert logits.shape == (2, 5, 16, 16)
    assert feat.shape == (2, 16, 16, 16)  # `channels`, stride 4
    head.eval()
    with torch.no_grad():
        logits, feat = decode_head_forward(head, feats, with_feat=True)
        assert torch.allclose(feat, head._forward_feature(feats))
        assert torch.allclose(logits, head.conv_seg(feat), atol=1e-6)
        assert torch.allclose(logits, head(feats))


def test_fused_feature_matches_reference_computation():
    """Embeddings: token-wise linear layers, bilinear resize to stride 4
    (align_corners=False), concatenation; fusion: ASPP branches summed into
    the bottleneck input by concatenation."""
    head = build().eval()
    feats = mit_like_features(seed=3)
    with torch.no_grad():
        embedded = []
        for i, f in enumerate(feats):
            proj = head.embed_layers[str(i)].proj
            e = torch.einsum('bchw,ec->behw', f, proj.weight) + \
                proj.bias.view(1, -1, 1, 1)
            if e.shape[-1] != 16:
                e = F.interpolate(e, size=(16, 16), mode='bilinear',
                                  align_corners=False)
            embedded.append(e)
        x = torch.cat(embedded, 1)
        branches = [m(x) for m in head.fuse_layer.aspp_modules]
        ref = head.fuse_layer.bottleneck(torch.cat(branches, 1))
        assert torch.allclose(head._forward_feature(feats), ref, atol=1e-5)


def test_variants_and_errors():
    conv = build(fusion='conv')
    assert isinstance(conv.fuse_layer, ConvModule)
    assert conv(mit_like_features()).shape == (2, 5, 16, 16)
    pooled = build(fusion_pool=True, fusion_separable=False)
    assert pooled.fuse_layer.image_pool is not None
    assert pooled.fuse_layer.bottleneck.conv.in_channels == 5 * 16
    assert pooled(mit_like_features()).shape == (2, 5, 16, 16)
    with pytest.raises(ValueError, match='align_corners'):
        MODELS.build(head_cfg(align_corners=True))
    with pytest.raises(TypeError, match='input_transform'):
        MODELS.build(head_cfg(input_transform='resize_concat'))
    with pytest.raises(ValueError, match='embed_dims'):
        MODELS.build(head_cfg(embed_dims=[8, 8]))


def test_full_size_daformer_head_parameter_count():
    """The MiT-B5 configuration (64/128/320/512 -> 256, 19 classes)."""
    head = MODELS.build(
        head_cfg(in_channels=[64, 128, 320, 512], channels=256,
                 embed_dims=256, num_classes=19))
    n = sum(p.numel() for p in head.parameters())
    embed = sum(c * 256 + 256 for c in (64, 128, 320, 512))
    aspp = (1024 * 256 + 2 * 256) + 3 * (
        1024 * 9 + 2 * 1024 + 1024 * 256 + 2 * 256)
    bottleneck = 4 * 256 * 256 * 9 + 2 * 256
    classifier = 256 * 19 + 19
    assert n == embed + aspp + bottleneck + classifier
