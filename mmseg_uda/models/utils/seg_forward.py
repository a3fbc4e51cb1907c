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
        """Split a jointly-forwarded batch back into per-domain outputs.
        Extras are split too: batch-sized tensors (and tuples of them) along
        the batch, anything else (e.g. HRDA's crop box) shared."""
        backbone = [torch.split(x, sizes) for x in self.backbone]
        logits = torch.split(self.logits, sizes)
        feat = torch.split(self.feat, sizes) if self.feat is not None \
            else [None] * len(sizes)
        total = sum(sizes)

        def split_extra(value, i):
            if torch.is_tensor(value) and value.dim() and \
                    value.shape[0] == total:
                return torch.split(value, sizes)[i]
            if isinstance(value, (tuple, list)) and value and all(
                    torch.is_tensor(v) and v.dim() and v.shape[0] == total
                    for v in value):
                return type(value)(torch.split(v, sizes)[i] for v in value)
            return value

        return [
            SegOutputs(
                backbone=tuple(b[i] for b in backbone),
                logits=logits[i],
                feat=feat[i],
                extras={k: split_extra(v, i)
                        for k, v in self.extras.items()})
            for i in range(len(sizes))
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
    """Training forward of the student: backbone(+neck) and decode head of
    an mmseg ``EncoderDecoder``, or the segmentor's own
    ``uda_train_forward(img, with_feat)`` when it defines one
    (``HRDAEncoderDecoder``: multi-resolution forward, fused logits)."""
    uda_forward = getattr(segmentor, 'uda_train_forward', None)
    if uda_forward is not None:
        return uda_forward(img, with_feat=with_feat)
    backbone = tuple(segmentor.extract_feat(img))
    logits, feat = decode_head_forward(segmentor.decode_head, backbone,
                                       with_feat)
    return SegOutputs(backbone=backbone, logits=logits, feat=feat)


def segmentor_teacher_forward(segmentor: nn.Module, img: Tensor,
                              with_feat: bool) -> SegOutputs:
    """Forward of the EMA teacher (pseudo-labels): the segmentor's
    ``uda_teacher_forward`` when it defines one (``HRDAEncoderDecoder``:
    context + detail slide, logits at the input size), else
    :func:`segmentor_forward`."""
    teacher_forward = getattr(segmentor, 'uda_teacher_forward', None)
    if teacher_forward is not None:
        return teacher_forward(img, with_feat=with_feat)
    return segmentor_forward(segmentor, img, with_feat)


def segmentor_loss(segmentor: nn.Module, outputs: SegOutputs, label: Tensor,
                   weight: Optional[Tensor] = None) -> Optional[dict]:
    """The segmentor's own loss for a training forward (``uda_loss``, e.g.
    HRDA's 0.9·fused + 0.1·detail), or None for a plain ``EncoderDecoder``
    (the caller computes its loss from ``outputs.logits``)."""
    uda_loss = getattr(segmentor, 'uda_loss', None)
    if uda_loss is None:
        return None
    return uda_loss(outputs, label, weight)


def feature_distance_input(segmentor: nn.Module, img: Tensor) -> Tensor:
    """What a frozen copy of the backbone must see to be compared with
    ``outputs.backbone``: ``img`` itself, or the segmentor's
    ``uda_feature_input(img)`` (HRDA: downscaled to ``feature_scale``)."""
    feature_input = getattr(segmentor, 'uda_feature_input', None)
    return img if feature_input is None else feature_input(img)
