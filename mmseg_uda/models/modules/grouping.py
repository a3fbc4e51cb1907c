"""CDGA's cross-domain grouping network C (Kim et al., AAAI 2021, Fig. 2;
layers reconstructed, docs/cdga.md)."""
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmseg_uda.registry import MODELS


@MODELS.register_module()
class CrossDomainGroupingNetwork(BaseModule):
    """Cross-domain grouping network C: decomposes the pixels of both domains
    into K sub-spaces (groups).

    Reconstructed layers (docs/cdga.md, [RECON]; the paper's method
    section was not available): Conv3×3(in→channels)-ReLU-
    Conv3×3(channels→channels)-ReLU-Conv1×1(channels→K). :meth:`forward`
    returns the K group logits per pixel; :meth:`assign` their softmax over
    the groups, the soft assignment A ∈ Δ^K. The network is shared by the
    source and target domains. Its input is the segmentation softmax P
    (``in_channels`` = number of classes) or a feature map, as the owning
    method chooses.

    Args:
        in_channels (int): channels of the input map.
        num_groups (int): K, the number of groups.
        channels (int): width of the two 3×3 layers (256 in the
            reconstruction).
    """

    def __init__(self,
                 in_channels: int,
                 num_groups: int,
                 channels: int = 256,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        for name, value in (('in_channels', in_channels),
                            ('num_groups', num_groups),
                            ('channels', channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f'CrossDomainGroupingNetwork: {name} must be a positive '
                    f'int, got {value!r}')
        self.in_channels = in_channels
        self.num_groups = num_groups
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_groups, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Group logits (B, K, h, w) of an input map (B, in_channels, h, w)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'CrossDomainGroupingNetwork expects (B, {self.in_channels}, '
                f'h, w) inputs, got {tuple(x.shape)}')
        return self.layers(x)

    def assign(self, x: Tensor) -> Tensor:
        """Soft group assignment A = softmax over the K groups."""
        return self(x).softmax(dim=1)
