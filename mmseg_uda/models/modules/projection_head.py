"""Pixel-embedding projection head for contrastive losses."""
from typing import Optional

import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmseg_uda.registry import MODELS


@MODELS.register_module()
class ProjectionHead(BaseModule):
    """g = Conv1×1(in→hidden)-BN-ReLU-Conv1×1(hidden→out), then L2
    normalisation over channels (T2S-DA embedding, reconstructed, see
    docs/t2s.md; the SimCLR/MoCo-v2 style head also used by ReCo and
    ContrastiveSeg).

    Args:
        in_channels (int): channels of the decode-head feature (256 for
            ``DAFormerHead``, 2048 for ``DLV2Head``'s layer4 feature).
        hidden_channels (int): width of the hidden layer.
        out_channels (int): embedding dimension.
        norm_cfg (dict, optional): norm after the first convolution; None
            for none (e.g. for exact multi-process tests, or use
            ``SyncBN`` on several GPUs).
        act_cfg (dict): activation after the first convolution.
        normalize (bool): L2-normalise the output embedding (float32).
    """

    def __init__(self,
                 in_channels: int = 256,
                 hidden_channels: int = 256,
                 out_channels: int = 128,
                 norm_cfg: Optional[dict] = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'),
                 normalize: bool = True,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.normalize = normalize
        self.hidden = ConvModule(
            in_channels,
            hidden_channels,
            1,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg)
        self.out = nn.Conv2d(hidden_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in, h, w) -> (B, out, h, w), unit norm per pixel."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'ProjectionHead expects (B, {self.in_channels}, h, w) '
                f'features, got {tuple(x.shape)}; set in_channels to the '
                'decode-head feature width (256 DAFormerHead, 2048 DLV2Head).')
        x = self.out(self.hidden(x))
        return F.normalize(x.float(), dim=1) if self.normalize else x
