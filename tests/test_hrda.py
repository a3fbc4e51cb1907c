"""HRDA multi-resolution segmentor and head: parity with the official
functions (fixtures from lhoyer/HRDA@c370b5b, see
tests/fixtures/hrda_reference.json), hand-checkable fusion, the composite
loss and its gradients against brute force, and clear errors on bad
settings."""
import copy
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from torch import nn

from mmseg_uda.models.decode_heads.hrda_head import HRDAHeadOutputs
from mmseg_uda.models.segmentors.hrda_encoder_decoder import (
    HRDA_CROP_BOX_KEY, HRDA_HR_KEY, detail_slide_boxes, draw_detail_crop_box)
from mmseg_uda.models.utils.seg_forward import (segmentor_forward,
                                                segmentor_teacher_forward)
from mmseg_uda.registry import MODELS

FIXTURE = osp.join(osp.dirname(__file__), 'fixtures', 'hrda_reference.pt')


@pytest.fixture(scope='module')
def ref():
    return torch.load(FIXTURE, weights_only=False)


def tiny_mit(embed=8):
    return dict(
        type='MixVisionTransformer', in_channels=3, embed_dims=embed,
        num_stages=4, num_layers=[1, 1, 1, 1], num_heads=[1, 2, 4, 8],
        patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2],
        sr_ratios=[8, 4, 2, 1], out_indices=(0, 1, 2, 3), mlp_ratio=2,
        drop_path_rate=0.0)


def hrda_head_cfg(num_classes=3, **kwargs):
    cfg = dict(
        type='HRDAHead', single_scale_head='DAFormerHead',
        in_channels=[8, 16, 32, 64], in_index=[0, 1, 2, 3], channels=16,
        embed_dims=16, fusion='aspp', fusion_dilations=(1, 2),
        num_classes=num_classes, norm_cfg=dict(type='BN', requires_grad=True),
        align_corners=False, attention_embed_dim=8, hr_loss_weight=0.1,
        loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0))
    cfg.update(kwargs)
    return cfg


def hrda_cfg(num_classes=3, head=None, **kwargs):
    cfg = dict(
        type='HRDAEncoderDecoder',
        data_preprocessor=dict(
            type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
            seg_pad_val=255),
        backbone=tiny_mit(),
        decode_head=hrda_head_cfg(num_classes, **(head or {})),
        scales=[1, 0.5], hr_crop_size=(32, 32), crop_coord_divisible=8,
        feature_scale=0.5, test_cfg=dict(mode='whole'))
    cfg.update(kwargs)
    return cfg


class AvgPoolBackbone(nn.Module):
    """The fixtures' known backbone: one 4×4 average-pooled level."""

    def forward(self, x):
        return [F.avg_pool2d(x, 4)]


class Conv1x1(nn.Module):
    """The fixtures' known head / attention head: a fixed 1×1 conv."""

    def __init__(self, weight, bias):
        super().__init__()
        self.register_buffer('weight', weight)
        self.register_buffer('bias', bias)

    def forward(self, feats):
        return F.conv2d(feats[0], self.weight[:, :, None, None], self.bias)


def known_model(ref):
    model = MODELS.build(hrda_cfg())
    m = ref['model']
    model.backbone = AvgPoolBackbone()
    model.decode_head.head = Conv1x1(m['W'], m['b'])
    model.decode_head.scale_attention = Conv1x1(m['Wa'], m['ba'])
    return model


# ---------------------------------------------------------------- crop box
def test_crop_boxes_match_official(ref):
    assert ref['source']['commit'].startswith('c370b5b')
    for case in ref['crop_boxes']:
        rng = np.random.RandomState(case['seed'])
        box = draw_detail_crop_box(*case['img'], case['crop'],
                                   case['divisible'], rng)
        assert list(box) == case['box'], case
        # Same number of draws (two, or none when the image is the crop).
        assert rng.randint(0, 2**31 - 1) == case['next_draw'], case
        # Default: numpy's global RNG, as the official code.
        np.random.seed(case['seed'])
        assert list(draw_detail_crop_box(*case['img'], case['crop'],
                                         case['divisible'])) == case['box']
    assert ref['crop_boxes'][0]['box'] == [352, 864, 376, 888]


def test_crop_box_offsets_on_grid():
    rng = np.random.RandomState(123)
    offsets = set()
    for _ in range(3000):
        y1, y2, x1, x2 = draw_detail_crop_box(1024, 1024, (512, 512), 8, rng)
        assert y2 - y1 == 512 and x2 - x1 == 512
        offsets.update((y1, x1))
    assert offsets == set(range(0, 505, 8))  # 512 is never drawn


# ----------------------------------------------------------------- fusion
def test_fusion_matches_official(ref):
    fx = ref['fusion']
    box = tuple(fx['box'])
    cases = {
        'classwise_box': (torch.sigmoid(fx['att_classwise']), fx['hr'], box),
        'single_box': (torch.sigmoid(fx['att_single']), fx['hr'], box),
        'fixed05_box': (0.5, fx['hr'], box),
        'fixed0_box': (0.0, fx['hr'], box),
        'fixed1_box': (1.0, fx['hr'], box),
        'classwise_nobox': (torch.sigmoid(fx['att_classwise']),
                            fx['hr_full'], None),
    }
    head = MODELS.build(hrda_head_cfg())
    for name, (att, hr, crop_box) in cases.items():
        fused, lr_weighted, _ = head.fuse(fx['lr'], hr, att, crop_box)
        expected = fx['cases'][name]
        torch.testing.assert_close(fused, expected['fused'], rtol=0,
                                   atol=1e-6, msg=name)
        torch.testing.assert_close(lr_weighted, expected['lr_weighted'],
                                   rtol=0, atol=1e-6, msg=name)


def test_fusion_constant_fields_by_hand():
    """a = 0.6, LR logits 1, HR logits 3, box (104, 616, 200, 712) on a
    1024 input: interior 0.6·3 + 0.4·1 = 2.2, first HR row inside the edge
    0.45·3 + 0.55 = 1.9, first row outside (1 − 0.15)·1 = 0.85, far 1."""
    head = MODELS.build(hrda_head_cfg())
    lr = torch.ones(1, 1, 128, 128)
    hr = torch.full((1, 1, 128, 128), 3.0)
    att = torch.full((1, 1, 128, 128), 0.6)
    fused, _, _ = head.fuse(lr, hr, att, (104, 616, 200, 712))
    col = 100  # inside the box horizontally (HR cols 50..177)
    assert fused[0, 0, 90, col].item() == pytest.approx(2.2)
    assert fused[0, 0, 26, col].item() == pytest.approx(1.9)
    assert fused[0, 0, 25, col].item() == pytest.approx(0.85)
    assert fused[0, 0, 0, col].item() == pytest.approx(1.0)
    # Inference (no box): a·H + (1 − a)·L everywhere.
    fused, _, _ = head.fuse(lr, torch.full((1, 1, 256, 256), 3.0), att,
                            None)
    torch.testing.assert_close(fused, torch.full_like(fused, 2.2))


def test_fixed_attention_builds_no_attention_head():
    head = MODELS.build(hrda_head_cfg(fixed_attention=0.5))
    assert head.scale_attention is None
    assert head.attention([torch.zeros(1)]) == 0.5
    single = MODELS.build(hrda_head_cfg(attention_classwise=False))
    assert single.scale_attention.num_classes == 1
    assert single.scale_attention.channels == 8  # attention_embed_dim
    # DAFormer's sep-ASPP fusion becomes a 1x1 ConvModule for the attention.
    assert type(single.scale_attention.fuse_layer).__name__ == 'ConvModule'
    assert type(single.head.fuse_layer).__name__ == 'ASPPFusion'


# ------------------------------------------------- slide / encode_decode
def test_detail_slide_and_encode_decode_match_official(ref):
    m = ref['model']
    assert [list(b) for b in detail_slide_boxes(64, 64, (32, 32))] == \
        m['slide_boxes']
    model = known_model(ref).eval()
    img = m['img']
    crops = torch.cat([img[:, :, y1:y2, x1:x2]
                       for y1, y2, x1, x2 in m['slide_boxes']])
    slide = model.decode_head.decode_slide(
        model.extract_unscaled_feat(crops), m['slide_boxes'], img.shape[0])
    torch.testing.assert_close(slide, m['detail_slide_logits'], rtol=0,
                               atol=1e-5)
    out = model.encode_decode(img, [dict(img_shape=img.shape[-2:])])
    torch.testing.assert_close(out, m['encode_decode'], rtol=0, atol=1e-5)
    # The teacher's forward is exactly encode_decode.
    teacher = segmentor_teacher_forward(model, img, with_feat=False)
    torch.testing.assert_close(teacher.logits, out, rtol=0, atol=0)


def test_train_forward_matches_official(ref):
    m = ref['model']
    model = known_model(ref)
    # The student's forward goes through the same path, drawing from numpy's
    # global RNG by default (as the official code).
    np.random.seed(m['train_seed'])
    via_dispatch = segmentor_forward(model, m['img'], with_feat=False)
    assert list(via_dispatch.extras[HRDA_CROP_BOX_KEY]) == m['train_box']
    out = model.uda_train_forward(
        m['img'], rng=np.random.RandomState(m['train_seed']))
    assert list(out.extras[HRDA_CROP_BOX_KEY]) == m['train_box']
    torch.testing.assert_close(out.logits, m['train_fused'], rtol=0,
                               atol=1e-5)
    torch.testing.assert_close(out.extras[HRDA_HR_KEY], m['train_hr'],
                               rtol=0, atol=1e-5)


def test_slide_counts_and_batching():
    """Count map 1/2/4 by bands for a 64 input with 32 windows; the head
    runs once on all 9·B crops (one BatchNorm batch)."""
    model = MODELS.build(hrda_cfg())
    calls = []
    model.decode_head.head.register_forward_hook(
        lambda mod, args, out: calls.append(out.shape[0]))
    img = torch.randn(2, 3, 64, 64)
    model.encode_decode(img, None)
    assert calls == [2, 18]  # context batch, then all detail crops at once
    ones = [torch.ones(1, 1, 8, 8)] * 9
    stacked = torch.cat(ones)

    class Identity(nn.Module):

        def forward(self, feats):
            return feats[0]

    model.decode_head.head = Identity()
    agg = model.decode_head.decode_slide(
        [stacked], detail_slide_boxes(64, 64, (32, 32)), 1)
    assert torch.equal(agg, torch.ones(1, 1, 16, 16))  # mean of ones


# ------------------------------------------------------------------ loss
def brute_force_ce(logits, label, weight, ignore=255):
    logits = F.interpolate(logits, size=label.shape[-2:], mode='bilinear',
                           align_corners=False)
    logp = torch.log_softmax(logits, dim=1)
    safe = label.clone()
    safe[label == ignore] = 0
    ce = -logp.gather(1, safe[:, None])[:, 0]
    ce = torch.where(label == ignore, torch.zeros_like(ce), ce)
    w = torch.ones_like(ce) if weight is None else weight
    return (ce * w).sum() / ce.numel()


@pytest.mark.parametrize('lr_weight', [0.0, 0.2])
def test_composite_loss_and_gradients(lr_weight):
    g = torch.Generator().manual_seed(0)
    head = MODELS.build(hrda_head_cfg(num_classes=4,
                                      lr_loss_weight=lr_weight))
    fused = torch.randn(2, 4, 16, 16, generator=g, requires_grad=True)
    lr = torch.randn(2, 4, 8, 8, generator=g, requires_grad=True)
    hr = torch.randn(2, 4, 8, 8, generator=g, requires_grad=True)
    label = torch.randint(0, 4, (2, 64, 64), generator=g)
    label[:, :5] = 255
    weight = torch.rand(2, 64, 64, generator=g)
    box = (16, 48, 8, 40)
    losses = head.hrda_loss(HRDAHeadOutputs(fused, lr, hr, 0.5), box, label,
                            weight)
    y1, y2, x1, x2 = box
    expected = {
        'loss_ce': (0.9 - lr_weight) * brute_force_ce(fused, label, weight),
        'hr.loss_ce': 0.1 * brute_force_ce(hr, label[:, y1:y2, x1:x2],
                                           weight[:, y1:y2, x1:x2]),
    }
    if lr_weight:
        expected['lr.loss_ce'] = lr_weight * brute_force_ce(lr, label, weight)
    else:
        assert 'lr.loss_ce' not in losses
    for key, value in expected.items():
        torch.testing.assert_close(losses[key], value, rtol=1e-6, atol=1e-7)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    grads = torch.autograd.grad(total, (fused, lr, hr), allow_unused=True)
    ref_grads = torch.autograd.grad(
        sum(expected.values()), (fused, lr, hr), allow_unused=True)
    for a, b in zip(grads, ref_grads):
        if b is None:
            assert a is None or not a.abs().sum()
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
    # Source loss (no weight) equals unit weights.
    plain = head.hrda_loss(HRDAHeadOutputs(fused, lr, hr, 0.5), box, label)
    torch.testing.assert_close(
        plain['loss_ce'],
        (0.9 - lr_weight) * brute_force_ce(fused, label, None))


def test_gradient_routing_through_model():
    """The detail term reaches neither the attention head nor the context
    path of the head; the fused term trains the attention head."""
    model = MODELS.build(hrda_cfg())
    img = torch.randn(2, 3, 64, 64)
    label = torch.randint(0, 3, (2, 64, 64))
    out = model.uda_train_forward(img, rng=np.random.RandomState(0))
    losses = model.uda_loss(out, label)
    params = dict(model.named_parameters())
    att = [p for n, p in params.items() if 'scale_attention' in n]
    g_hr = torch.autograd.grad(losses['hr.loss_ce'], att, allow_unused=True,
                               retain_graph=True)
    assert all(g is None or not g.abs().sum() for g in g_hr)
    g_fused = torch.autograd.grad(losses['loss_ce'], att, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in g_fused)


def test_supervised_loss_and_predict():
    """Plain mmseg use: loss() and slide predict()."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    model = MODELS.build(hrda_cfg(test_cfg=ConfigDict(
        mode='slide', crop_size=(64, 64), stride=(32, 32))))
    img = torch.randn(1, 3, 64, 96)
    sample = SegDataSample(gt_sem_seg=PixelData(
        data=torch.randint(0, 3, (1, 64, 96))))
    sample.set_metainfo(dict(img_shape=(64, 96), ori_shape=(64, 96)))
    losses = model.loss(img, [sample])
    assert {'decode.loss_ce', 'decode.hr.loss_ce'} <= set(losses)
    model.eval()
    with torch.no_grad():
        pred = model.predict(img, [copy.deepcopy(sample)])
    assert pred[0].seg_logits.data.shape == (3, 64, 96)


# ------------------------------------------------------------- bad input
def test_detail_crop_not_smaller_than_context_crop():
    model = MODELS.build(hrda_cfg(hr_crop_size=(32, 32)))
    with pytest.raises(ValueError, match='hr_crop_size'):
        model.uda_train_forward(torch.randn(1, 3, 32, 32))


def test_crop_size_not_divisible_by_stride():
    with pytest.raises(ValueError, match='hr_crop_size'):
        MODELS.build(hrda_cfg(hr_crop_size=(36, 36)))
    with pytest.raises(ValueError, match='crop_coord_divisible'):
        MODELS.build(hrda_cfg(crop_coord_divisible=2))
    model = MODELS.build(hrda_cfg())
    with pytest.raises(ValueError, match='crop'):
        model.uda_train_forward(torch.randn(1, 3, 60, 60))


def test_slide_larger_than_image():
    model = MODELS.build(hrda_cfg(test_cfg=ConfigDict(
        mode='slide', crop_size=(128, 128), stride=(64, 64))))
    model.eval()
    metas = [dict(img_shape=(64, 64), ori_shape=(64, 64))]
    with pytest.raises(ValueError, match='test_cfg.crop_size'):
        model.slide_inference(torch.randn(1, 3, 64, 64), metas)
    with pytest.raises(ValueError, match='hr_crop_size'):
        model.encode_decode(torch.randn(1, 3, 16, 64), metas)


@MODELS.register_module(force=True)
class _HeadWithoutFeature(BaseDecodeHead):
    """A decode head with no reachable pre-classifier feature."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        del self.conv_seg
        del self.dropout

    def forward(self, inputs):
        return inputs[0]


def test_head_that_cannot_return_features():
    with pytest.raises(TypeError, match='single_scale_head'):
        MODELS.build(dict(
            type='HRDAHead', single_scale_head='_HeadWithoutFeature',
            output_stride=4, in_channels=8, channels=4, num_classes=3))


def test_unknown_output_stride_and_scales():
    with pytest.raises(ValueError, match='output_stride'):
        MODELS.build(dict(type='HRDAHead', single_scale_head='FCNHead',
                          in_channels=8, channels=4, num_classes=3))
    with pytest.raises(ValueError, match='feature_scale'):
        MODELS.build(hrda_cfg(feature_scale=0.25))
    with pytest.raises(ValueError, match='hr_loss_weight'):
        MODELS.build(hrda_cfg(head=dict(hr_loss_weight=1.0)))


def test_generic_head_with_explicit_stride():
    """Any decode head: FCNHead on the tiny MiT's first stage (stride 4)."""
    cfg = hrda_cfg()
    cfg['decode_head'] = dict(
        type='HRDAHead', single_scale_head='FCNHead', output_stride=4,
        in_channels=8, in_index=0, channels=8, num_convs=1,
        concat_input=False, num_classes=3, hr_loss_weight=0.1)
    model = MODELS.build(cfg)
    out = model.uda_train_forward(torch.randn(1, 3, 64, 64),
                                  with_feat=True)
    assert out.logits.shape == (1, 3, 16, 16)
    assert out.feat.shape == (1, 8, 8, 8)  # context pre-classifier feature
