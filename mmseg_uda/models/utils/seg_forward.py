"""Forward helpers that return what UDA methods need from any mmseg
segmentor: backbone (+neck) features, the decode head's pre-classifier
feature and the logits, from one forward pass."""
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn


@dataclass
class SegOutputs:
    """Outputs of one segmentor forward pass on a batch of images.

    Attributes:
        backbone: ``extract_feat`` output (backbone stages, after the neck if
            the segmentor has one).
        logits: decode-head logits at the head's output stride (B, C, h, w).
        feat: the decode head's pre-classifier feature (input of its final
            classifier, before dropout), or None if not requested.
        extras: per-method cache for anything else derived from this pass.
    """
    backbone: Tuple[Tensor, ...]
    logits: Tensor
    feat: Optional[Tensor] = None
    extras: dict = field(default_factory=dict)

    def split(self, sizes: List[int]) -> List['SegOutputs']:
        """Split a jointly-forwarded batch back into per-domain outputs."""
        backbone = [torch.split(x, sizes) for x in self.backbone]
        logits = torch.split(self.logits, sizes)
        feat = torch.split(self.feat, sizes) if self.feat is not None \
            else [None] * len(sizes)
        return [
            SegOutputs(
                backbone=tuple(b[i] for b in backbone),
                logits=logits[i],
                feat=feat[i]) for i in range(len(sizes))
        ]


def _feature_capture_module(head: nn.Module) -> Optional[nn.Module]:
    """The module whose input is the pre-classifier feature: the head's
    dropout if it has one (so the captured feature is pre-dropout), else its
    ``conv_seg``."""
    dropout = getattr(head, 'dropout', None)
    if isinstance(dropout, nn.Module):
        return dropout
    conv_seg = getattr(head, 'conv_seg', None)
    if isinstance(conv_seg, nn.Module):
        return conv_seg
    return None


def decode_head_forward(head: nn.Module, backbone_feats,
                        with_feat: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """Run ``head`` on ``backbone_feats`` and optionally capture the
    pre-classifier feature.

    Heads that end in mmseg's ``cls_seg`` (dropout -> conv_seg) are run
    unchanged and the feature is captured with a forward pre-hook, so their
    ``forward`` semantics are untouched. Heads without ``conv_seg`` (e.g.
    ``DLV2Head``) must provide ``_forward_feature`` and ``cls_seg``.
    """
    if not with_feat:
        return head(backbone_feats), None
    capture = _feature_capture_module(head)
    if capture is None:
        if not (hasattr(head, '_forward_feature')
                and hasattr(head, 'cls_seg')):
            raise TypeError(
                f'{type(head).__name__} exposes no pre-classifier feature: it '
                'has neither conv_seg/dropout nor _forward_feature+cls_seg. '
                'A UDA method asked for the decode-head feature.')
        feat = head._forward_feature(backbone_feats)
        return head.cls_seg(feat), feat
    captured = []

    def hook(module, args):
        captured.append(args[0])

    handle = capture.register_forward_pre_hook(hook)
    try:
        logits = head(backbone_feats)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(
            f'Expected {type(head).__name__}.{type(capture).__name__} to run '
            f'once per forward, it ran {len(captured)} times.')
    return logits, captured[0]


def segmentor_forward(segmentor: nn.Module, img: Tensor,
                      with_feat: bool) -> SegOutputs:
    """Backbone(+neck) and decode head of an mmseg ``EncoderDecoder``."""
    backbone = tuple(segmentor.extract_feat(img))
    logits, feat = decode_head_forward(segmentor.decode_head, backbone,
                                       with_feat)
    return SegOutputs(backbone=backbone, logits=logits, feat=feat)
