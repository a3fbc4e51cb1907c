"""Deterministic random weights under the official DeepLab-V2 key names.

Shared by tests/test_deeplab_caffe_stem.py and by the one-off script that
produced tests/fixtures/deeplabv2_official_outputs.json from the official
network classes (see that file's ``provenance``). Only torch is used, so the
same seed gives the same tensors on every machine.
"""
import math
from collections import OrderedDict
from typing import Sequence

import torch

STAGE_PLANES = (64, 128, 256, 512)
ASPP_RATES = (6, 12, 18, 24)


def deeplab_backbone_tensors(stage_blocks: Sequence[int],
                             seed: int = 0) -> 'OrderedDict':
    """ResNet tensors under the keys of AdaptSegNet ``ResNetMulti`` /
    ADVENT ``ResNetMulti`` / PLCA's torchvision-style ``ResNet`` (the three
    share them: ``conv1``, ``bn1``, ``layer{s}.{b}.conv{1,2,3}``,
    ``layer{s}.{b}.bn{1,2,3}``, ``layer{s}.0.downsample.{0,1}``).

    Conv weights are N(0, 1/fan_in) so activations stay O(1) through the
    network; BN statistics and affine parameters are random too, so an
    eval-mode forward exercises every tensor.
    """
    gen = torch.Generator().manual_seed(seed)
    tensors = OrderedDict()

    def conv(name, out_ch, in_ch, k):
        tensors[f'{name}.weight'] = torch.randn(
            out_ch, in_ch, k, k, generator=gen) / math.sqrt(in_ch * k * k)

    def bn(name, channels):
        tensors[f'{name}.weight'] = 1 + 0.1 * torch.randn(
            channels, generator=gen)
        tensors[f'{name}.bias'] = 0.1 * torch.randn(channels, generator=gen)
        tensors[f'{name}.running_mean'] = 0.1 * torch.randn(
            channels, generator=gen)
        tensors[f'{name}.running_var'] = 0.5 + torch.rand(
            channels, generator=gen)
        tensors[f'{name}.num_batches_tracked'] = torch.tensor(0)

    conv('conv1', 64, 3, 7)
    bn('bn1', 64)
    inplanes = 64
    for stage, (planes, blocks) in enumerate(
            zip(STAGE_PLANES, stage_blocks), start=1):
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


def aspp_tensors(num_classes: int = 19,
                 in_channels: int = 2048,
                 bias: bool = True,
                 seed: int = 1) -> list:
    """(weight, bias or None) of the four ASPP convolutions, rates 6, 12,
    18, 24 in that order."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in ASPP_RATES:
        weight = torch.randn(
            num_classes, in_channels, 3, 3, generator=gen) / math.sqrt(
                in_channels * 9)
        b = 0.1 * torch.randn(num_classes, generator=gen) if bias else None
        out.append((weight, b))
    return out


def reference_input(width: int, height: int, seed: int = 2) -> torch.Tensor:
    """A mean-subtracted Caffe-range (0-255 minus mean) BGR image batch."""
    gen = torch.Generator().manual_seed(seed)
    return 50 * torch.randn(1, 3, height, width, generator=gen)
