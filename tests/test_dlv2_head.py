"""DLV2Head against brute-force dilated convolutions, its feature/classifier
split, registry build and init, batch-1 training, the loss, and the
deeplabv2_r101 base config."""
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_uda  # noqa: F401
import mmseg_uda.models.decode_heads  # noqa: F401  registers DLV2Head

CONFIG_DIR = osp.join(
    osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs', '_base_',
    'models')


def build_head(**kwargs):
    cfg = dict(type='DLV2Head', in_channels=6, in_index=3, num_classes=4)
    cfg.update(kwargs)
    head = MODELS.build(cfg)
    head.init_weights()
    return head


def backbone_outputs(channels=6, size=(13, 15), batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return tuple(
        torch.randn(batch, channels, *size, generator=gen) for _ in range(4))


def randomise_params(head, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in head.parameters():
            param.copy_(torch.randn(param.shape, generator=gen))


def brute_force_logits(head, x, dilations):
    out = 0
    for conv, d in zip(head.aspp_modules, dilations):
        out = out + F.conv2d(
            x, conv.weight, conv.bias, padding=d, dilation=d)
    return out


@pytest.mark.parametrize('dilations', [(6, 12, 18, 24), (1, 2, 3)])
def test_output_is_sum_of_dilated_convs(dilations):
    head = build_head(dilations=dilations)
    randomise_params(head)
    inputs = backbone_outputs()
    logits = head(inputs)
    assert logits.shape == (2, 4, 13, 15)
    assert len(head.aspp_modules) == len(dilations)
    torch.testing.assert_close(
        logits, brute_force_logits(head, inputs[3], dilations))


def test_bias_switch():
    zeros = tuple(torch.zeros(1, 6, 5, 5) for _ in range(4))
    no_bias = build_head(bias=False)
    assert all(conv.bias is None for conv in no_bias.aspp_modules)
    randomise_params(no_bias)
    assert torch.count_nonzero(no_bias(zeros)) == 0

    with_bias = build_head(bias=True)
    randomise_params(with_bias)
    bias_sum = sum(conv.bias for conv in with_bias.aspp_modules)
    torch.testing.assert_close(
        with_bias(zeros), bias_sum.view(1, 4, 1, 1).expand(1, 4, 5, 5))


def test_feature_classifier_split():
    head = build_head()
    randomise_params(head)
    inputs = backbone_outputs()
    feat = head._forward_feature(inputs)
    assert feat is inputs[3]  # the selected backbone stage, untouched
    torch.testing.assert_close(head.cls_seg(feat), head(inputs))


def test_adaptsegnet_early_return_uses_first_two_dilations():
    head = build_head(adaptsegnet_early_return=True)
    randomise_params(head)
    assert head.dilations == (6, 12, 18, 24)
    assert [conv.dilation[0] for conv in head.aspp_modules] == [6, 12]
    inputs = backbone_outputs()
    torch.testing.assert_close(
        head(inputs), brute_force_logits(head, inputs[3], (6, 12)))


def test_registry_build_and_init():
    head = build_head(in_channels=64, num_classes=8)
    assert not hasattr(head, 'conv_seg')
    assert head.dropout is None
    assert not any(
        isinstance(m, (torch.nn.BatchNorm2d, torch.nn.ReLU,
                       torch.nn.Dropout2d)) for m in head.modules())
    weights = torch.cat([c.weight.flatten() for c in head.aspp_modules])
    assert 0.008 < weights.std().item() < 0.012  # Normal(0, 0.01)
    for conv in head.aspp_modules:
        assert torch.count_nonzero(conv.bias) == 0
    for fixed in ('channels', 'dropout_ratio', 'norm_cfg'):
        with pytest.raises(TypeError, match=fixed):
            MODELS.build(
                dict(type='DLV2Head', in_channels=6, num_classes=4,
                     **{fixed: None}))


def seg_samples(labels):
    samples = []
    for label in labels:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label[None])
        samples.append(sample)
    return samples


def test_batch_one_train_step_and_loss_by_feat():
    head = build_head()
    head.train()
    randomise_params(head)
    inputs = backbone_outputs(batch=1, size=(4, 5))
    label = torch.randint(0, 4, (16, 20), generator=torch.Generator()
                          .manual_seed(2))
    label[:3] = 255
    losses = head.loss(inputs, seg_samples([label]), train_cfg=dict())
    # mmseg CE (avg_non_ignore=False): per-pixel CE of the bilinearly
    # upsampled logits, ignored pixels count as 0 in the mean.
    logits = F.interpolate(
        head(inputs), size=(16, 20), mode='bilinear', align_corners=False)
    expected = F.cross_entropy(
        logits, label[None], ignore_index=255, reduction='none').mean()
    torch.testing.assert_close(losses['loss_ce'], expected)
    losses['loss_ce'].backward()
    for name, param in head.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_deeplabv2_r101_config_builds_output_stride_8():
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'deeplabv2_r101.py'))
    model_cfg = cfg.model
    assert model_cfg.backbone.init_cfg.checkpoint == \
        'pretrained/resnet101_v1c-e67eebb6.pth'
    # no weights file on CI: random init, and BN instead of SyncBN on CPU
    model_cfg.backbone.init_cfg = None
    model_cfg.backbone.norm_cfg = dict(type='BN', requires_grad=True)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(model_cfg)
    model.init_weights()
    model.eval()
    assert type(model.decode_head).__name__ == 'DLV2Head'
    assert model.decode_head.in_channels == 2048
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 33, 41))
        logits = model.decode_head(feats)
    assert feats[3].shape == (1, 2048, 5, 6)  # ceil(33/8), ceil(41/8)
    assert logits.shape == (1, 19, 5, 6)
