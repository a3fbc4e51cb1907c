"""HRDA multi-resolution head (Hoyer et al., "HRDA: Context-Aware
High-Resolution Domain-Adaptive Semantic Segmentation", ECCV 2022, §3.2-3.3).

Reference behaviour (read, not copied): ``lhoyer/HRDA`` at commit
``c370b5b0fe3c6238993435819f9a8f1518c413b5``,
``mmseg/models/decode_heads/hrda_head.py::HRDAHead`` (``forward``,
``decode_hr``, ``losses``). Numerical parity with those functions is checked
by ``tests/test_hrda.py`` against fixtures computed with the official code.
"""
import copy
import inspect
from typing import Dict, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.losses import accuracy
from mmseg.models.utils import resize
from torch import Tensor

from mmseg_uda.registry import MODELS
from ..utils.seg_forward import _feature_capture_module, decode_head_forward

#: Output strides of the heads HRDA ships configs for (HRDA's ``self.os``).
KNOWN_OUTPUT_STRIDES = {'DAFormerHead': 4, 'DLV2Head': 8}

CropBox = Tuple[int, int, int, int]  # (y1, y2, x1, x2) in pixels


class HRDAHeadOutputs(NamedTuple):
    """Everything one HRDA head forward produces.

    Attributes:
        fused: fused logits on the detail (HR) grid of the whole input,
            (B, C, H·s_hr/os, W·s_hr/os).
        lr: the attention-weighted context logits ``(1 − a)·lr`` on the
            context grid (what HRDA's optional LR loss sees).
        hr: detail logits: one crop (training) or the slide aggregate.
        attention: the scale attention on the context grid (masked to the
            detail box in training), a tensor or the fixed scalar.
        feat: pre-classifier feature of the shared head on the context
            branch, when requested.
    """
    fused: Tensor
    lr: Tensor
    hr: Tensor
    attention: Union[Tensor, float]
    feat: Optional[Tensor] = None


def scale_box(box: CropBox, scale: float) -> CropBox:
    """Box divided by ``scale``, each coordinate truncated with ``int()``
    (HRDA's ``scale_box``)."""
    return tuple(int(c / scale) for c in box)


def crop_to_box(x: Tensor, box: CropBox) -> Tensor:
    """The last two dims of ``x`` cropped to ``box = (y1, y2, x1, x2)``."""
    y1, y2, x1, x2 = box
    return x[..., y1:y2, x1:x2]


@MODELS.register_module()
class HRDAHead(BaseDecodeHead):
    """Wraps any decode head into HRDA's two-scale head.

    One instance of ``single_scale_head`` (``self.head``) decodes both the
    context features (the input downscaled by ``scales[0]``) and the detail
    features (a crop at ``scales[1]``). A second head
    (``self.scale_attention``) on the context features predicts the scale
    attention a = σ(·), which fuses the two (HRDA Eq. 5, as the official code
    computes it):

        fused = U(a·m) ⊙ hr_inserted + U((1 − a·m) ⊙ lr)

    with m the detail box on the context grid (training only; 1 without a
    box), U the bilinear ×(s_hr/s_lr) upsampling and hr_inserted the detail
    logits written into zeros at their box. The products are formed on the
    context grid and then upsampled, as in the official code.

    Loss (HRDA Eq. 6 with λ_d = ``hr_loss_weight``, optional λ_lr):
    (1 − λ_d − λ_lr)·L(U(fused), y, w) + λ_d·L(U(hr), y[box], w[box])
    + λ_lr·L(U(lr), y, w), every term with the logits resized to the label
    (:meth:`hrda_loss`).

    The segmentor (:class:`~mmseg_uda.models.segmentors.HRDAEncoderDecoder`)
    passes the crop box explicitly; the head holds no per-call state.

    Args:
        single_scale_head (str): registered type of the wrapped head
            (``'DAFormerHead'``, ``'DLV2Head'`` or any mmseg decode head).
        scales (Sequence[float]): (context, detail) scales, sorted; injected
            by ``HRDAEncoderDecoder``.
        lr_loss_weight (float): λ_lr. HRDA 0.
        hr_loss_weight (float): λ_d. HRDA 0.1.
        attention_embed_dim (int): width of the attention head (HRDA 256;
            used for ``DAFormerHead``, whose ``aspp`` fusion becomes a 1×1
            conv as in HRDA).
        attention_classwise (bool): one attention channel per class (HRDA
            True) or one for all.
        fixed_attention (float | None): replace the learnt attention by a
            constant (HRDA ablation 0.5; 0 = context only, 1 = detail only
            inside the crop); no attention head is built.
        attention_head_cfg (dict | None): extra overrides of the attention
            head's config (for heads other than DAFormerHead/DLV2Head).
        output_stride (int | None): input pixels per logit of the wrapped
            head on its backbone. Default: 4 for DAFormerHead, 8 for
            DLV2Head (HRDA's ``os``); required for other heads.
        **kwargs: the wrapped head's config (also gives ``num_classes``,
            ``loss_decode``, ``ignore_index``, ``align_corners`` of the
            wrapper).
    """

    def __init__(self,
                 single_scale_head: str,
                 scales: Sequence[float] = (0.5, 1.0),
                 lr_loss_weight: float = 0.0,
                 hr_loss_weight: float = 0.0,
                 attention_embed_dim: int = 256,
                 attention_classwise: bool = True,
                 fixed_attention: Optional[float] = None,
                 attention_head_cfg: Optional[dict] = None,
                 output_stride: Optional[int] = None,
                 **kwargs):
        if not isinstance(single_scale_head, str):
            raise TypeError(
                'decode_head.single_scale_head must be the registered type '
                "name of the wrapped head (e.g. 'DAFormerHead'), got "
                f'{single_scale_head!r}')
        if output_stride is None:
            if single_scale_head not in KNOWN_OUTPUT_STRIDES:
                raise ValueError(
                    f'decode_head.output_stride is required for '
                    f'single_scale_head={single_scale_head!r} (known: '
                    f'{KNOWN_OUTPUT_STRIDES}): input pixels per logit of '
                    'the wrapped head.')
            output_stride = KNOWN_OUTPUT_STRIDES[single_scale_head]
        scales = sorted(float(s) for s in scales)
        if len(scales) != 2:
            raise ValueError(
                f'HRDAHead needs exactly two scales, got {scales}')
        if not (hr_loss_weight >= 0 and lr_loss_weight >= 0
                and hr_loss_weight + lr_loss_weight < 1):
            raise ValueError(
                'decode_head.hr_loss_weight and lr_loss_weight must be >= 0 '
                f'with sum < 1, got {hr_loss_weight}, {lr_loss_weight}')
        head_cfg = dict(copy.deepcopy(kwargs), type=single_scale_head)
        attn_cfg = copy.deepcopy(head_cfg)
        if single_scale_head == 'DAFormerHead':
            attn_cfg['channels'] = attention_embed_dim
            attn_cfg['embed_dims'] = attention_embed_dim
            if attn_cfg.get('fusion', 'aspp') == 'aspp':
                attn_cfg['fusion'] = 'conv'
        if not attention_classwise:
            attn_cfg['num_classes'] = 1
            attn_cfg.pop('out_channels', None)
        attn_cfg.update(attention_head_cfg or {})

        # The wrapper's own BaseDecodeHead: only its loss settings matter;
        # its classifier is deleted (the wrapped heads classify).
        base_params = inspect.signature(BaseDecodeHead.__init__).parameters
        base_kwargs = {k: v for k, v in kwargs.items()
                       if k in base_params and k not in (
                           'init_cfg', 'dropout_ratio', 'norm_cfg',
                           'channels', 'input_transform')}
        in_channels = base_kwargs.get('in_channels', 1)
        super().__init__(
            channels=1,
            dropout_ratio=0,
            input_transform='multiple_select' if isinstance(
                in_channels, (list, tuple)) else None,
            init_cfg=None,
            **base_kwargs)
        del self.conv_seg
        del self.dropout

        self.head = MODELS.build(head_cfg)
        if _feature_capture_module(self.head) is None and not (
                hasattr(self.head, '_forward_feature')
                and hasattr(self.head, 'cls_seg')):
            raise TypeError(
                f'decode_head.single_scale_head={single_scale_head!r} cannot '
                'return its pre-classifier feature (no conv_seg/dropout and '
                'no _forward_feature + cls_seg); HRDAHead needs a plain '
                'decode head to wrap.')
        self.scale_attention = None
        self.fixed_attention = fixed_attention
        if fixed_attention is None:
            self.scale_attention = MODELS.build(attn_cfg)
        elif not 0.0 <= fixed_attention <= 1.0:
            raise ValueError('decode_head.fixed_attention must be in [0, 1], '
                             f'got {fixed_attention}')
        self.single_scale_head = single_scale_head
        self.output_stride = int(output_stride)
        self.scales = scales
        self.lr_loss_weight = float(lr_loss_weight)
        self.hr_loss_weight = float(hr_loss_weight)

    # ------------------------------------------------------------- decoding
    def _resize_by(self, x: Tensor, factor: float) -> Tensor:
        if factor == 1:
            return x
        return resize(
            x,
            scale_factor=factor,
            mode='bilinear',
            align_corners=self.align_corners)

    def decode_slide(self, feats, boxes: Sequence[CropBox],
                     batch_size: int) -> Tensor:
        """Logits of the detail slide (HRDA ``decode_hr``): the head runs once
        on all ``len(boxes)·B`` crops (crop-major batch, as the segmentor
        stacked them, so BatchNorm sees them together), each crop's logits
        are added at its box / ``output_stride`` and the sum is divided by
        the count: logits (not probabilities) are averaged."""
        logits = self.head(feats)
        os_ = self.output_stride
        boxes = [scale_box(b, os_) for b in boxes]
        h = max(b[1] for b in boxes)
        w = max(b[3] for b in boxes)
        preds = logits.new_zeros((batch_size, logits.shape[1], h, w))
        count = logits.new_zeros((batch_size, 1, h, w))
        for i, (y1, y2, x1, x2) in enumerate(boxes):
            crop_logits = logits[i * batch_size:(i + 1) * batch_size]
            if tuple(crop_logits.shape[-2:]) != (y2 - y1, x2 - x1):
                raise ValueError(
                    f'Detail slide window {(y2 - y1) * os_}x{(x2 - x1) * os_} '
                    f'gave logits {tuple(crop_logits.shape[-2:])}, not '
                    f'window / decode_head.output_stride ({os_}).')
            preds = preds + F.pad(crop_logits,
                                  (x1, w - x2, y1, h - y2))
            count[:, :, y1:y2, x1:x2] += 1
        return preds / count

    def attention(self, lr_feats) -> Union[Tensor, float]:
        """σ(scale_attention(context features)), or ``fixed_attention``."""
        if self.scale_attention is None:
            return self.fixed_attention
        return torch.sigmoid(self.scale_attention(lr_feats))

    def fuse(self, lr: Tensor, hr: Tensor, att: Union[Tensor, float],
             crop_box: Optional[CropBox]) -> Tuple[Tensor, Tensor, Tensor]:
        """HRDA's fusion (``HRDAHead.forward``): returns
        (fused, attention-weighted lr, masked attention on the LR grid).

        ``crop_box`` is in pixels of the detail-scale input; None at
        inference (``hr`` then covers the whole input)."""
        lr_scale, hr_scale = self.scales
        os_ = self.output_stride
        if crop_box is not None:
            mask = lr.new_zeros((lr.shape[0], 1, *lr.shape[2:]))
            y1, y2, x1, x2 = scale_box(crop_box, os_ / lr_scale)
            mask[:, :, y1:y2, x1:x2] = 1
            att = att * mask
        lr = (1 - att) * lr
        up_lr = self._resize_by(lr, hr_scale / lr_scale)
        up_att = self._resize_by(att, hr_scale / lr_scale) \
            if torch.is_tensor(att) else att
        if crop_box is not None:
            hr_inserted = torch.zeros_like(up_lr)
            y1, y2, x1, x2 = scale_box(crop_box, os_)
            if tuple(hr.shape[-2:]) != (y2 - y1, x2 - x1):
                raise ValueError(
                    f'Detail logits {tuple(hr.shape[-2:])} do not fill the '
                    f'detail box {crop_box} / decode_head.output_stride '
                    f'({os_}); is output_stride right for this backbone?')
            hr_inserted[:, :, y1:y2, x1:x2] = hr
        else:
            hr_inserted = hr
        if hr_inserted.shape[-2:] != up_lr.shape[-2:]:
            raise ValueError(
                f'Detail logits {tuple(hr_inserted.shape[-2:])} and upsampled '
                f'context logits {tuple(up_lr.shape[-2:])} differ: the input '
                'size must be divisible by decode_head.output_stride / '
                f'scales[0] = {os_ / lr_scale:g}.')
        return up_att * hr_inserted + up_lr, lr, att

    def forward_branches(self,
                         inputs,
                         crop_box: Optional[CropBox] = None,
                         slide_boxes: Optional[Sequence[CropBox]] = None,
                         with_feat: bool = False) -> HRDAHeadOutputs:
        """Decode ``inputs = (context_feats, detail_feats)``.

        Args:
            crop_box: the training detail box (pixels of the detail-scale
                input), or None.
            slide_boxes: the detail slide windows when ``detail_feats`` holds
                all windows stacked crop-major (inference), else None.
            with_feat: also return the shared head's pre-classifier feature
                on the context branch.
        """
        if len(inputs) != 2:
            raise ValueError('HRDAHead expects (context_feats, detail_feats), '
                             f'got {len(inputs)} inputs')
        lr_feats, hr_feats = inputs
        batch_size = lr_feats[0].shape[0]
        lr, feat = decode_head_forward(self.head, lr_feats, with_feat)
        if slide_boxes is not None:
            hr = self.decode_slide(hr_feats, slide_boxes, batch_size)
        else:
            hr = self.head(hr_feats)
        att = self.attention(lr_feats)
        fused, lr, att = self.fuse(lr, hr, att, crop_box)
        return HRDAHeadOutputs(fused, lr, hr, att, feat)

    def forward(self, inputs, crop_box: Optional[CropBox] = None) -> Tensor:
        """Fused logits (mmseg's ``forward`` contract: one tensor)."""
        return self.forward_branches(inputs, crop_box).fused

    # ---------------------------------------------------------------- loss
    def _weighted_losses(self, logits: Tensor, label: Tensor,
                         weight: Optional[Tensor]) -> Dict[str, Tensor]:
        """mmseg's ``loss_by_feat`` with a pixel weight: logits resized to
        the label, every ``loss_decode`` term with ``weight`` (mean over all
        pixels, ignored ones with loss 0 under mmseg's default
        ``avg_non_ignore=False``), plus ``acc_seg``."""
        logits = resize(
            logits,
            size=label.shape[-2:],
            mode='bilinear',
            align_corners=self.align_corners)
        losses = {}
        loss_decode = self.loss_decode if isinstance(
            self.loss_decode, torch.nn.ModuleList) else [self.loss_decode]
        for loss_module in loss_decode:
            value = loss_module(
                logits, label, weight=weight, ignore_index=self.ignore_index)
            name = loss_module.loss_name
            losses[name] = losses[name] + value if name in losses else value
        losses['acc_seg'] = accuracy(
            logits, label, ignore_index=self.ignore_index)
        return losses

    def hrda_loss(self,
                  outputs: HRDAHeadOutputs,
                  crop_box: Optional[CropBox],
                  seg_label: Tensor,
                  seg_weight: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """HRDA's loss (``HRDAHead.losses``, Eq. 6).

        Args:
            outputs: :meth:`forward_branches` output.
            crop_box: the detail box in label pixels (labels are at the
                detail scale 1), or None (detail = whole input).
            seg_label: (B, H, W) int64 label at the input size.
            seg_weight: (B, H, W) pixel weight or None.

        Returns:
            ``<loss_name>`` = (1 − λ_d − λ_lr)·fused term, ``acc_seg``;
            ``hr.<loss_name>`` = λ_d·detail term, ``hr.acc_seg`` (if λ_d > 0);
            ``lr.<loss_name>`` = λ_lr·context term (if λ_lr > 0).
        """
        if seg_label.dim() == 4:
            seg_label = seg_label.squeeze(1)
        if seg_weight is not None and seg_weight.dim() == 4:
            seg_weight = seg_weight.squeeze(1)
        main_weight = 1 - self.hr_loss_weight - self.lr_loss_weight
        losses = {}

        def add(prefix: str, terms: Dict[str, Tensor], factor: float):
            for key, value in terms.items():
                if 'loss' in key:
                    value = value * factor
                losses[prefix + key] = value

        add('', self._weighted_losses(outputs.fused, seg_label, seg_weight),
            main_weight)
        if self.lr_loss_weight > 0:
            add('lr.',
                self._weighted_losses(outputs.lr, seg_label, seg_weight),
                self.lr_loss_weight)
        if self.hr_loss_weight > 0:
            label, weight = seg_label, seg_weight
            if crop_box is not None:
                label = crop_to_box(seg_label, crop_box)
                weight = None if seg_weight is None else crop_to_box(
                    seg_weight, crop_box)
            add('hr.', self._weighted_losses(outputs.hr, label, weight),
                self.hr_loss_weight)
        return losses

    def loss(self, inputs, batch_data_samples, train_cfg):
        raise RuntimeError(
            'HRDAHead is trained through HRDAEncoderDecoder.loss / uda_loss, '
            'which pass the detail crop box.')

    def predict(self, inputs, batch_img_metas, test_cfg):
        """Fused logits of an inference forward (no box), resized to the
        image as mmseg's ``predict_by_feat`` does."""
        return self.predict_by_feat(self.forward(inputs), batch_img_metas)
