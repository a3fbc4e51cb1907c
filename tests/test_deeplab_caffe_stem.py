"""The Caffe DeepLab-V2 configs build the official network: stem max-pool
in ceil mode (DeepLabV2ResNet), so output sizes and values equal those of
AdaptSegNet ``DeeplabMulti``, ADVENT ``get_deeplab_v2`` and PLCA
``deeplabv2_resnet101``.

Reference numbers: tests/fixtures/deeplabv2_official_outputs.json, produced
once by running the official classes (repositories, commits and functions in
its ``provenance``) on the weights of tests/deeplab_reference_weights.py.
"""
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.models.backbones.resnet import Bottleneck

from deeplab_reference_weights import (aspp_tensors, deeplab_backbone_tensors,
                                       reference_input)
from mmseg_uda.models.backbones import DeepLabV2ResNet
from mmseg_uda.models.utils.weight_conversion import convert_deeplab_resnet
from mmseg_uda.registry import MODELS

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
MODEL_DIR = osp.join(REPO, 'configs', '_base_', 'models')
with open(osp.join(REPO, 'tests', 'fixtures',
                   'deeplabv2_official_outputs.json')) as f:
    OFFICIAL = json.load(f)

# The input sizes (W x H) each config is used at: AdaptSegNet/CDGA train on
# 1280x720 GTA (1280x760 SYNTHIA) crops and 1024x512 Cityscapes, test at
# 1024x512 (2048x1024 upsampled labels); PLCA trains on 730x730 crops and
# tests at 1460x730; 321x321 is DeepLab's own crop.
CONFIG_SIZES = {
    'deeplabv2_r101_caffe.py': ['321x321', '1024x512', '2048x1024'],
    'deeplabv2_r101_caffe_adaptsegnet.py':
    ['1280x720', '1280x760', '1024x512', '2048x1024'],
    'deeplabv2_r101_caffe_plca.py': ['730x730', '1460x730', '1024x512'],
}


@pytest.fixture(autouse=True)
def mmseg_scope():
    init_default_scope('mmseg')


def model_cfg(name):
    cfg = Config.fromfile(osp.join(MODEL_DIR, name)).model
    cfg.backbone.init_cfg = None  # no pretrained file on CI
    cfg.backbone.norm_cfg = dict(type='BN', requires_grad=True)  # not SyncBN
    cfg.decode_head.init_cfg = None
    return cfg


def stride8_logits(model, img):
    return model.decode_head(model.extract_feat(img))


@pytest.mark.parametrize('name', list(CONFIG_SIZES))
def test_configs_give_the_official_output_size(name):
    """The full ResNet-101 of each config, run shape-only (meta device), at
    every size it is used at."""
    cfg = model_cfg(name)
    assert cfg.backbone.type == 'DeepLabV2ResNet' and cfg.backbone.depth == 101
    with torch.device('meta'):
        model = MODELS.build(cfg).eval()
    assert model.backbone.maxpool.ceil_mode
    for size in CONFIG_SIZES[name]:
        w, h = map(int, size.split('x'))
        with torch.no_grad():
            out = stride8_logits(model, torch.empty(1, 3, h, w,
                                                    device='meta'))
        assert list(out.shape[-2:]) == OFFICIAL['stride8_output_hw'][size], \
            size


def test_floor_mode_pool_misses_the_official_size():
    """Negative control: mmseg's floor-mode pool (what the configs built
    before) gives 64x128 where the official networks give 65x129."""
    cfg = model_cfg('deeplabv2_r101_caffe.py')
    cfg.backbone.stem_pool_ceil_mode = False
    with torch.device('meta'):
        model = MODELS.build(cfg).eval()
        out = stride8_logits(model, torch.empty(1, 3, 512, 1024))
    assert list(out.shape[-2:]) == [64, 128]
    assert OFFICIAL['stride8_output_hw']['1024x512'] == [65, 129]


class _ShallowDeepLabV2ResNet(DeepLabV2ResNet):
    """One bottleneck per stage: same stem, strides, dilations and block
    layout as depth 101, cheap enough for a CPU forward at 1024x512."""
    arch_settings = {101: (Bottleneck, (1, 1, 1, 1))}


def shallow_network(cfg_name, ceil_mode=True):
    cfg = model_cfg(cfg_name)
    backbone_cfg = dict(cfg.backbone)
    backbone_cfg.pop('type')
    backbone_cfg['stem_pool_ceil_mode'] = ceil_mode
    backbone = _ShallowDeepLabV2ResNet(**backbone_cfg)
    official = deeplab_backbone_tensors((1, 1, 1, 1), seed=0)
    # the package's converter maps the official names onto mmseg's
    converted, report = convert_deeplab_resnet(official,
                                               backbone.state_dict())
    assert report.ok
    backbone.load_state_dict(converted, strict=True)
    head = MODELS.build(cfg.decode_head)
    bias = cfg.decode_head.bias
    state = {}
    for i, (weight, b) in enumerate(aspp_tensors(bias=bias, seed=1)):
        if i < len(head.aspp_modules):
            state[f'aspp_modules.{i}.weight'] = weight
            if bias:
                state[f'aspp_modules.{i}.bias'] = b
    head.load_state_dict(state, strict=True)
    backbone.eval()  # mmseg's ResNet.train() returns None
    head.eval()
    return backbone, head


def assert_matches(logits, ref):
    logits = logits[0].double()
    assert list(logits.shape) == ref['shape']
    scale = logits.abs().max().item()
    step = ref['grid_step']
    torch.testing.assert_close(
        logits[:, ::step, ::step],
        torch.tensor(ref['grid'], dtype=torch.float64),
        rtol=1e-4, atol=1e-5 * scale)
    # the last row/column only exist in ceil mode
    torch.testing.assert_close(
        logits[0, -1, :], torch.tensor(ref['last_row_channel0'],
                                       dtype=torch.float64),
        rtol=1e-4, atol=1e-5 * scale)
    torch.testing.assert_close(
        logits[0, :, -1], torch.tensor(ref['last_col_channel0'],
                                       dtype=torch.float64),
        rtol=1e-4, atol=1e-5 * scale)
    torch.testing.assert_close(
        logits.sum(dim=(1, 2)),
        torch.tensor(ref['channel_sums'], dtype=torch.float64),
        rtol=1e-4, atol=1e-5 * scale * logits[0].numel())


@pytest.fixture(scope='module')
def networks():
    """The shallow backbone (converted official-layout weights) and the
    AdaptSegNet and PLCA heads, built once."""
    backbone, head_asn = shallow_network(
        'deeplabv2_r101_caffe_adaptsegnet.py')
    _, head_plca = shallow_network('deeplabv2_r101_caffe_plca.py')
    return backbone, head_asn, head_plca


def test_values_equal_the_official_networks_at_1024x512(networks):
    """AdaptSegNet (layer6, early-return classifier) and PLCA (four rates,
    no bias) logits at stride 8 for a 1024x512 input, from weights in the
    official key layout converted by the package's converter."""
    adaptsegnet = OFFICIAL['adaptsegnet_shallow']
    plca = OFFICIAL['plca_shallow']
    assert adaptsegnet['input_wh'] == plca['input_wh'] == [1024, 512]
    backbone, head_asn, head_plca = networks
    img = reference_input(1024, 512, seed=adaptsegnet['input_seed'])
    with torch.no_grad():
        feats = backbone(img)
        assert feats[3].shape[-2:] == (65, 129)
        assert_matches(head_asn(feats), adaptsegnet)
        assert_matches(head_plca(feats), plca)


def test_floor_mode_values_differ(networks):
    """Negative control on values: the same weights with mmseg's floor-mode
    pool give a smaller map whose values differ too (zero padding where the
    official network sees data reaches the whole map through the dilated
    layers and the rate-24 ASPP)."""
    backbone, _, head = networks
    img = reference_input(256, 128, seed=2)
    with torch.no_grad():
        ceil_out = head(backbone(img))
        backbone.maxpool.ceil_mode = False
        try:
            floor_out = head(backbone(img))
        finally:
            backbone.maxpool.ceil_mode = True
    assert ceil_out.shape[-2:] == (17, 33)
    assert floor_out.shape[-2:] == (16, 32)
    common = ceil_out[..., :16, :32]
    assert not torch.allclose(floor_out, common, rtol=1e-3, atol=1e-3)
