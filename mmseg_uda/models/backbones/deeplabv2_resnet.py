"""The ResNet of the DeepLab-V2 (Caffe) segmentation network."""
import torch.nn as nn
from mmseg.models.backbones import ResNet

from mmseg_uda.registry import MODELS


@MODELS.register_module()
class DeepLabV2ResNet(ResNet):
    """mmseg's ``ResNet`` with the stem max-pool of the DeepLab-V2 network.

    The DeepLab-V2 ResNet-101 of the UDA literature pools its stem with
    ``MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)`` (the
    ``# change`` line of AdaptSegNet ``model/deeplab_multi.py::ResNetMulti``
    at wasidennis/AdaptSegNet@fca9ff0f, ADVENT
    ``advent/model/deeplabv2.py::ResNetMulti`` at valeoai/ADVENT@3e58d45a,
    PLCA ``model/resnet.py::ResNet`` at
    kgl-prml/Pixel-Level-Cycle-Association@e01d77a0); mmseg's ``ResNet``
    pools in floor mode. Kernel, stride and padding are the same, so the two
    agree wherever floor and ceil give the same size (e.g. 321, 730) and
    the ceil-mode map has one more row/column otherwise (H or W ≡ 0 or 3
    mod 4: a 1024×512 input gives a 129×65 stride-8 map, not 128×64).

    Everything else (arguments, parameter names, weights) is mmseg's
    ``ResNet``, so checkpoints converted by
    ``tools/model_converters/deeplab_resnet2mmseg.py`` load unchanged.

    Args:
        stem_pool_ceil_mode (bool): ceil mode of the stem max-pool.
            Default True (the official networks); False is mmseg's ResNet.
        **kwargs: mmseg ``ResNet`` arguments.
    """

    def __init__(self, *args, stem_pool_ceil_mode: bool = True, **kwargs):
        self.stem_pool_ceil_mode = stem_pool_ceil_mode
        super().__init__(*args, **kwargs)

    def _make_stem_layer(self, in_channels, stem_channels):
        super()._make_stem_layer(in_channels, stem_channels)
        self.maxpool = nn.MaxPool2d(
            kernel_size=3,
            stride=2,
            padding=1,
            ceil_mode=self.stem_pool_ceil_mode)
