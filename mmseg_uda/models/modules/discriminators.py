"""Discriminators for adversarial alignment."""
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmseg_uda.registry import MODELS


@MODELS.register_module()
class FCDiscriminator(BaseModule):
    """AdaptSegNet's fully-convolutional output-space discriminator
    (Tsai et al., CVPR 2018; ``wasidennis/AdaptSegNet:
    model/discriminator.py``, also ADVENT's ``get_fc_discriminator``).

    Four 4×4 stride-2 convolutions with ``ndf·(1, 2, 4, 8)`` channels, each
    followed by LeakyReLU(0.2), then a 4×4 stride-2 convolution to one
    domain logit per cell (output stride 32); no normalisation layers.

    Args:
        in_channels (int): channels of the input map (number of classes for
            softmax / self-information inputs).
        ndf (int): width of the first layer.
        negative_slope (float): LeakyReLU slope.
    """

    def __init__(self,
                 in_channels: int,
                 ndf: int = 64,
                 negative_slope: float = 0.2,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        widths = [in_channels, ndf, ndf * 2, ndf * 4, ndf * 8]
        layers = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [
                nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1),
                nn.LeakyReLU(negative_slope, inplace=True)
            ]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(
            widths[-1], 1, kernel_size=4, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f'FCDiscriminator expects {self.in_channels} input channels '
                f'(set in_channels / num_classes), got {x.shape[1]}.')
        if min(x.shape[-2:]) < 32:
            raise ValueError(
                'FCDiscriminator has five stride-2 4x4 convolutions and needs '
                f'inputs of at least 32x32, got {tuple(x.shape[-2:])}: '
                'upsample its input (upsample_to_input=True) or use larger '
                'crops.')
        return self.classifier(self.features(x))
