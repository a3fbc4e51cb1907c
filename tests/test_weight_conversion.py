"""deeplab_resnet2mmseg: fake DeepLab-Caffe / torchvision ResNet-101
checkpoints (real key names, random tensors) convert into mmseg ``ResNet``
keys that load with strict=True, problems are reported by name, and the
converted file initialises the deeplabv2_r101_caffe config's backbone."""
import importlib.util
import os.path as osp
from collections import OrderedDict

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

# mmseg_uda first: its mmcv-lite shim must precede any mmseg.models import.
import mmseg_uda  # noqa: F401,I001
import mmseg_uda.models.decode_heads  # noqa: F401  registers DLV2Head
from mmseg.models.backbones import ResNet  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402
from mmseg_uda.models.utils.weight_conversion import (convert_deeplab_resnet,
                                                      extract_state_dict)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def load_cli():
    spec = importlib.util.spec_from_file_location(
        'deeplab_resnet2mmseg',
        osp.join(REPO, 'tools', 'model_converters', 'deeplab_resnet2mmseg.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def resnet_tensors(depth=101, with_counter=False, seed=0):
    """Key names and shapes written out from the torchvision / DeepLab
    (AdaptSegNet ``deeplab_multi.py``) bottleneck ResNet definition."""
    gen = torch.Generator().manual_seed(seed)
    tensors = OrderedDict()

    def bn(name, channels):
        tensors[f'{name}.weight'] = torch.randn(channels, generator=gen)
        tensors[f'{name}.bias'] = torch.randn(channels, generator=gen)
        tensors[f'{name}.running_mean'] = torch.randn(channels, generator=gen)
        tensors[f'{name}.running_var'] = torch.rand(channels, generator=gen)
        if with_counter:
            tensors[f'{name}.num_batches_tracked'] = torch.tensor(7)

    def conv(name, out_ch, in_ch, k):
        tensors[f'{name}.weight'] = torch.randn(
            out_ch, in_ch, k, k, generator=gen)

    conv('conv1', 64, 3, 7)
    bn('bn1', 64)
    inplanes = 64
    for stage, (planes, blocks) in enumerate(
            zip((64, 128, 256, 512), STAGE_BLOCKS[depth]), start=1):
        for block in range(blocks):
            prefix = f'layer{stage}.{block}'
            conv(f'{prefix}.conv1', planes, inplanes, 1)
            bn(f'{prefix}.bn1', planes)
            conv(f'{prefix}.conv2', planes, planes, 3)
            bn(f'{prefix}.bn2', planes)
            conv(f'{prefix}.conv3', planes * 4, planes, 1)
            bn(f'{prefix}.bn3', planes * 4)
            if block == 0:
                conv(f'{prefix}.downsample.0', planes * 4, inplanes, 1)
                bn(f'{prefix}.downsample.1', planes * 4)
            inplanes = planes * 4
    return tensors


def fake_deeplab_checkpoint():
    """DeepLab_resnet_pretrained_init: ``Scale.`` prefix, no
    num_batches_tracked (pre-0.4 PyTorch), ``layer5`` ASPP classifier."""
    ckpt = OrderedDict(
        (f'Scale.{k}', v) for k, v in resnet_tensors().items())
    for i in range(4):
        ckpt[f'Scale.layer5.conv2d_list.{i}.weight'] = torch.randn(
            21, 2048, 3, 3)
        ckpt[f'Scale.layer5.conv2d_list.{i}.bias'] = torch.randn(21)
    return ckpt


def fake_torchvision_checkpoint():
    ckpt = resnet_tensors(with_counter=True, seed=3)
    ckpt['fc.weight'] = torch.randn(1000, 2048)
    ckpt['fc.bias'] = torch.randn(1000)
    return ckpt


@pytest.fixture(scope='module')
def target_state_dict():
    return ResNet(depth=101, style='caffe').state_dict()


def assert_loads_with_original_values(converted, original, strip=''):
    resnet = ResNet(depth=101, style='caffe')
    resnet.load_state_dict(converted, strict=True)
    loaded = resnet.state_dict()
    for key, value in original.items():
        name = key[len(strip):] if key.startswith(strip) else key
        if name.startswith(('layer5.', 'fc.')):
            continue
        assert torch.equal(loaded[name], value), name


def test_deeplab_caffe_checkpoint_round_trip(target_state_dict):
    original = fake_deeplab_checkpoint()
    converted, report = convert_deeplab_resnet(original, target_state_dict)
    assert report.ok and report.source_format == 'deeplab_caffe'
    assert sorted(report.dropped_classifier) == sorted(
        k for k in original if k.startswith('Scale.layer5.'))
    assert report.unexpected == [] and report.missing == []
    # every BN lacks the counter: 1 stem + 3 per block + 1 per stage
    assert len(report.added_buffers) == 1 + 3 * 33 + 4
    assert_loads_with_original_values(converted, original, strip='Scale.')


def test_torchvision_checkpoint_round_trip(target_state_dict):
    original = fake_torchvision_checkpoint()
    converted, report = convert_deeplab_resnet(original, target_state_dict)
    assert report.ok and report.source_format == 'torchvision'
    assert report.dropped_classifier == ['fc.weight', 'fc.bias']
    assert report.added_buffers == []
    assert_loads_with_original_values(converted, original)


def test_plca_container_and_wrapper_prefixes(target_state_dict):
    # PLCA's load_model unwraps {'model': ...}; DDP adds 'module.'
    tensors = fake_torchvision_checkpoint()
    wrapped = {'model': OrderedDict(
        (f'module.Scale.{k}', v) for k, v in tensors.items())}
    converted, report = convert_deeplab_resnet(
        extract_state_dict(wrapped), target_state_dict)
    assert report.ok
    assert_loads_with_original_values(converted, tensors)


def test_problems_are_named(target_state_dict):
    ckpt = fake_deeplab_checkpoint()
    del ckpt['Scale.layer3.22.conv2.weight']
    ckpt['Scale.layer1.0.conv1.weight'] = torch.randn(64, 64, 3, 3)
    ckpt['Scale.aux.weight'] = torch.randn(3)
    converted, report = convert_deeplab_resnet(ckpt, target_state_dict)
    assert not report.ok
    assert report.missing == ['layer3.22.conv2.weight']
    assert report.shape_mismatch == {
        'layer1.0.conv1.weight': ((64, 64, 3, 3), (64, 64, 1, 1))
    }
    assert report.unexpected == ['aux.weight']
    assert 'aux.weight' not in converted
    assert 'layer1.0.conv1.weight' not in converted


def test_cli_exit_status_and_messages(tmp_path, capsys):
    cli = load_cli()
    ckpt = fake_deeplab_checkpoint()
    del ckpt['Scale.layer4.2.bn3.running_var']
    src, dst = tmp_path / 'broken.pth', tmp_path / 'out.pth'
    torch.save(ckpt, src)
    assert cli.main([str(src), str(dst)]) == 1
    captured = capsys.readouterr()
    assert 'MISSING (1): layer4.2.bn3.running_var' in captured.out
    assert not dst.exists()


def test_converted_file_initialises_caffe_config(tmp_path):
    cli = load_cli()
    original = fake_deeplab_checkpoint()
    src = tmp_path / 'DeepLab_resnet_pretrained_init-f81d91e8.pth'
    dst = tmp_path / 'deeplab_resnet101_imagenet_mmseg.pth'
    torch.save(original, src)
    assert cli.main([str(src), str(dst)]) == 0

    cfg = Config.fromfile(
        osp.join(REPO, 'configs', '_base_', 'models',
                 'deeplabv2_r101_caffe.py'))
    backbone = cfg.model.backbone
    assert backbone.init_cfg.checkpoint == \
        'pretrained/deeplab_resnet101_imagenet_mmseg.pth'
    backbone.init_cfg.checkpoint = str(dst)
    backbone.norm_cfg = dict(type='BN', requires_grad=True)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    loaded = model.backbone.state_dict()
    for key in ('conv1.weight', 'bn1.running_var',
                'layer1.0.downsample.0.weight', 'layer3.22.conv2.weight',
                'layer4.2.bn3.bias'):
        assert torch.equal(loaded[key], original[f'Scale.{key}']), key

    # Caffe network: BGR mean subtraction, 7x7 stem, stride on the 1x1 conv,
    # output stride 8, bias-free PLCA head.
    assert model.data_preprocessor.mean.flatten().tolist() == pytest.approx(
        [104.00698793, 116.66876762, 122.67891434])
    assert model.data_preprocessor.std.flatten().tolist() == [1.0, 1.0, 1.0]
    assert model.backbone.conv1.kernel_size == (7, 7)
    assert model.backbone.layer2[0].conv1.stride == (2, 2)
    assert model.backbone.layer3[0].conv2.dilation == (2, 2)
    assert all(conv.bias is None for conv in model.decode_head.aspp_modules)
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 33, 33))
        logits = model.decode_head(feats)
    assert logits.shape == (1, 19, 5, 5)
