"""HRDA multi-resolution encoder-decoder (Hoyer et al., "HRDA: Context-Aware
High-Resolution Domain-Adaptive Semantic Segmentation", ECCV 2022, §3.2-3.4).

Reference behaviour (read, not copied): ``lhoyer/HRDA`` at commit
``c370b5b0fe3c6238993435819f9a8f1518c413b5``,
``mmseg/models/segmentors/hrda_encoder_decoder.py`` (``get_crop_bbox``,
``_forward_train_features``, ``extract_slide_feat``, ``encode_decode``,
``extract_feat``). Parity fixtures: ``tests/fixtures/hrda_reference.pt``.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmseg.models.segmentors import EncoderDecoder
from mmseg.models.utils import resize
from mmseg.utils import add_prefix
from torch import Tensor

from mmseg_uda.registry import MODELS
from ..decode_heads.hrda_head import (CropBox, HRDAHead, HRDAHeadOutputs,
                                      crop_to_box)
from ..utils.seg_forward import SegOutputs

#: ``SegOutputs.extras`` keys of an HRDA training forward.
HRDA_CROP_BOX_KEY = 'hrda_crop_box'
HRDA_LR_KEY = 'hrda_lr_logits'
HRDA_HR_KEY = 'hrda_hr_logits'
HRDA_ATTENTION_KEY = 'hrda_attention'
HRDA_DETAIL_BACKBONE_KEY = 'hrda_detail_backbone'


def draw_detail_crop_box(img_h: int,
                         img_w: int,
                         crop_size: Sequence[int],
                         divisible: int = 1,
                         rng=None) -> CropBox:
    """HRDA's detail-crop box (``get_crop_bbox``).

    If the image equals the crop, the box is the whole image and nothing is
    drawn. Otherwise ``offset_h = randint(0, (img_h − crop_h + 1) // d) · d``
    and then ``offset_w`` the same way (two draws, y first), so the offsets
    are multiples of ``d = divisible`` (e.g. 8 → 0…504 for 512 in 1024).

    Args:
        rng: ``np.random.RandomState``/``np.random`` (anything with
            ``randint(low, high)``); default numpy's global RNG, which
            ``UDASegmentor`` reseeds each iteration.

    Returns:
        (y1, y2, x1, x2).
    """
    crop_h, crop_w = crop_size
    if img_h == crop_h and img_w == crop_w:
        return 0, img_h, 0, img_w
    rng = np.random if rng is None else rng
    margin_h = max(img_h - crop_h, 0)
    margin_w = max(img_w - crop_w, 0)
    offset_h = int(rng.randint(0, (margin_h + 1) // divisible)) * divisible
    offset_w = int(rng.randint(0, (margin_w + 1) // divisible)) * divisible
    return offset_h, offset_h + crop_h, offset_w, offset_w + crop_w


def detail_slide_boxes(img_h: int, img_w: int, crop_size: Sequence[int],
                       overlapping: bool = True) -> List[CropBox]:
    """Windows of HRDA's detail slide (``extract_slide_feat``): stride half
    the crop (or the crop without overlap), mmseg's grid formula, the last
    window clamped to the border; row-major order."""
    h_crop, w_crop = crop_size
    h_stride, w_stride = (h_crop // 2, w_crop // 2) if overlapping \
        else (h_crop, w_crop)
    h_grids = max(img_h - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(img_w - w_crop + w_stride - 1, 0) // w_stride + 1
    boxes = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y2 = min(h_idx * h_stride + h_crop, img_h)
            x2 = min(w_idx * w_stride + w_crop, img_w)
            boxes.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
    return boxes


@MODELS.register_module()
class HRDAEncoderDecoder(EncoderDecoder):
    """HRDA's multi-resolution segmentor around any mmseg encoder-decoder.

    Training forward (:meth:`uda_train_forward`): the context branch sees
    the input downscaled by ``scales[0]`` (HRDA 0.5), the detail branch a
    random ``hr_crop_size`` crop of the input at ``scales[1]`` (HRDA 1) whose
    offsets are multiples of ``crop_coord_divisible``; one box per call,
    shared by the batch (:func:`draw_detail_crop_box`). Both go through the
    same backbone (two calls) and the :class:`HRDAHead`.

    Inference (:meth:`encode_decode`, used by the EMA teacher for
    pseudo-labels and by mmseg's ``whole``/``slide`` test modes per window):
    the context branch on the whole downscaled input and a detail slide of
    ``hr_crop_size`` windows at stride ``hr_crop_size // 2`` whose crops run
    through backbone and head as one crop-major batch; the fused logits are
    resized to the input.

    UDA protocol (what ``UDASegmentor`` and its methods call instead of
    ``extract_feat`` + ``decode_head``):

    - :meth:`uda_train_forward` → ``SegOutputs`` whose ``logits`` are the
      fused logits on the detail grid of the whole input (input size /
      output stride), ``backbone`` the **context** features (what feature
      distance compares), ``feat`` the shared head's pre-classifier feature
      on the context branch, and extras (crop box, LR/HR logits, attention,
      detail backbone features);
    - :meth:`uda_loss` → HRDA's composite loss for those outputs;
    - :meth:`uda_teacher_forward` → ``SegOutputs`` whose logits are
      :meth:`encode_decode` (input size);
    - :meth:`uda_feature_input` → the input of the frozen ImageNet encoder
      (the image downscaled by ``feature_scale``).

    Args:
        scales (Sequence[float]): the two scales (HRDA ``[1, 0.5]``, sorted to
            context 0.5, detail 1).
        hr_crop_size (Sequence[int] | None): detail crop (h, w) (HRDA
            512×512); None: the detail branch sees the whole input.
        hr_slide_inference (bool): detail slide at inference (HRDA True);
            False runs the detail branch on the whole input.
        hr_slide_overlapping (bool): stride crop/2 (True) or crop.
        crop_coord_divisible (int): grid of the box offsets (HRDA 8 =
            output stride 4 / context scale 0.5).
        blur_hr_crop (bool): feed the detail branch U×2(U×0.5(x)) (ablation).
        feature_scale (float): scale whose backbone features are the
            ``backbone`` of the outputs and the FD input (HRDA 0.5).
        **kwargs: ``EncoderDecoder`` arguments; ``decode_head`` must be an
            ``HRDAHead`` config (``scales`` is injected).
    """

    def __init__(self,
                 backbone: dict,
                 decode_head: dict,
                 scales: Sequence[float] = (1.0, 0.5),
                 hr_crop_size: Optional[Sequence[int]] = None,
                 hr_slide_inference: bool = True,
                 hr_slide_overlapping: bool = True,
                 crop_coord_divisible: int = 1,
                 blur_hr_crop: bool = False,
                 feature_scale: float = 0.5,
                 **kwargs):
        scales = sorted(float(s) for s in scales)
        if len(scales) != 2 or scales[0] <= 0:
            raise ValueError(f'HRDAEncoderDecoder: scales must be two '
                             f'positive factors, got {scales}')
        if isinstance(feature_scale, str) or \
                float(feature_scale) not in scales:
            raise ValueError(
                f'HRDAEncoderDecoder: feature_scale must be one of scales '
                f"{scales}, got {feature_scale!r} ('all' is not supported)")
        decode_head = dict(decode_head, scales=scales)
        if kwargs.get('auxiliary_head') is not None:
            raise ValueError('HRDAEncoderDecoder: auxiliary_head is not '
                             'supported (as in HRDA).')
        super().__init__(backbone=backbone, decode_head=decode_head,
                         **kwargs)
        if not isinstance(self.decode_head, HRDAHead):
            raise TypeError(
                'HRDAEncoderDecoder needs decode_head.type=HRDAHead (wrapping '
                'the single-scale head), got '
                f'{type(self.decode_head).__name__}')
        self.scales = scales
        self.feature_scale = float(feature_scale)
        self.hr_slide_inference = hr_slide_inference
        self.hr_slide_overlapping = hr_slide_overlapping
        self.crop_coord_divisible = int(crop_coord_divisible)
        self.blur_hr_crop = blur_hr_crop
        # Input pixels of one context-grid cell (HRDA: 4 / 0.5 = 8).
        os_ = self.decode_head.output_stride
        self.context_cell = os_ / scales[0]
        self.crop_size = None
        if hr_crop_size is not None:
            hr_crop_size = tuple(int(s) for s in hr_crop_size)
            if len(hr_crop_size) != 2 or min(hr_crop_size) <= 0:
                raise ValueError('HRDAEncoderDecoder: hr_crop_size must be '
                                 f'(h, w) > 0, got {hr_crop_size}')
            bad = [s for s in hr_crop_size
                   if (s / self.context_cell) % 1 or (s * scales[1]) % os_]
            if bad:
                raise ValueError(
                    f'HRDAEncoderDecoder: hr_crop_size {hr_crop_size} must be '
                    'divisible by the feature stride on the context grid, '
                    f'decode_head.output_stride / scales[0] = '
                    f'{self.context_cell:g} (and by output_stride at the '
                    'detail scale).')
            if self.crop_coord_divisible % os_:
                raise ValueError(
                    f'HRDAEncoderDecoder: crop_coord_divisible='
                    f'{crop_coord_divisible} must be a multiple of '
                    f'decode_head.output_stride={os_}, so the detail logits '
                    'land on whole cells.')
            self.crop_size = hr_crop_size
        # The RNG of the detail-box draws when uda_train_forward gets none.
        # UDASegmentor sets it every iteration to a stream seeded by (base
        # seed, iteration) only, the same on every process: N processes then
        # crop their shares of the global batch where 1 process crops the
        # whole batch, so N processes equal 1 (HRDA draws from each
        # process's global RNG instead). None: numpy's global RNG.
        self.crop_rng = None

    # --------------------------------------------------------------- helpers
    def extract_unscaled_feat(self, img: Tensor) -> List[Tensor]:
        x = self.backbone(img)
        if self.with_neck:
            x = self.neck(x)
        return list(x)

    def _rescale(self, img: Tensor, scale: float) -> Tensor:
        if scale == 1:
            return img
        return resize(img, scale_factor=scale, mode='bilinear',
                      align_corners=self.align_corners)

    def _scaled_input(self, img: Tensor, scale: float) -> Tensor:
        if scale == 1 and self.blur_hr_crop:
            return self._rescale(self._rescale(img, 0.5), 2.0)
        return self._rescale(img, scale)

    def uda_feature_input(self, img: Tensor) -> Tensor:
        """The image the frozen ImageNet encoder sees for feature distance:
        ``img`` downscaled by ``feature_scale`` (HRDA ``extract_feat``)."""
        with torch.no_grad():
            return self._rescale(img, self.feature_scale)

    def extract_feat(self, inputs: Tensor) -> List[Tensor]:
        """Backbone features of the input at ``feature_scale`` (HRDA's
        ``extract_feat``, the features feature distance uses)."""
        return self.extract_unscaled_feat(self.uda_feature_input(inputs))

    def _check_training_size(self, img: Tensor) -> None:
        h, w = img.shape[-2:]
        if (h / self.context_cell) % 1 or (w / self.context_cell) % 1:
            raise ValueError(
                f'HRDAEncoderDecoder: the training crop {h}x{w} must be '
                'divisible by decode_head.output_stride / scales[0] = '
                f'{self.context_cell:g} (set the pipeline\'s crop_size).')
        if self.crop_size is not None:
            hr_h, hr_w = int(h * self.scales[1]), int(w * self.scales[1])
            if self.crop_size[0] >= hr_h or self.crop_size[1] >= hr_w:
                raise ValueError(
                    f'HRDAEncoderDecoder: hr_crop_size {self.crop_size} must '
                    f'be smaller than the training crop at the detail scale '
                    f'({hr_h}x{hr_w}); the detail crop is a window of the '
                    'context crop.')

    # -------------------------------------------------------------- training
    def uda_train_forward(self, img: Tensor, with_feat: bool = False,
                          rng=None) -> SegOutputs:
        """HRDA training forward (``_forward_train_features`` + head).

        Draws one detail box for the batch (:func:`draw_detail_crop_box`
        with ``rng``, default ``self.crop_rng``, else numpy's global RNG)."""
        self._check_training_size(img)
        lr_scale, hr_scale = self.scales
        lr_img = self._scaled_input(img, lr_scale)
        hr_img = self._scaled_input(img, hr_scale)
        box = None
        if self.crop_size is not None:
            box = draw_detail_crop_box(
                *hr_img.shape[-2:], self.crop_size, self.crop_coord_divisible,
                self.crop_rng if rng is None else rng)
            hr_img = crop_to_box(hr_img, box)
        lr_feats = self.extract_unscaled_feat(lr_img)
        hr_feats = self.extract_unscaled_feat(hr_img)
        out = self.decode_head.forward_branches(
            [lr_feats, hr_feats], crop_box=box, with_feat=with_feat)
        backbone = lr_feats if self.feature_scale == lr_scale else hr_feats
        return SegOutputs(
            backbone=tuple(backbone),
            logits=out.fused,
            feat=out.feat,
            extras={
                HRDA_CROP_BOX_KEY: box,
                HRDA_LR_KEY: out.lr,
                HRDA_HR_KEY: out.hr,
                HRDA_ATTENTION_KEY: out.attention,
                HRDA_DETAIL_BACKBONE_KEY: tuple(hr_feats),
            })

    def uda_loss(self,
                 outputs: SegOutputs,
                 seg_label: Tensor,
                 seg_weight: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """HRDA's composite loss of a :meth:`uda_train_forward` output:
        ``loss_ce`` (×(1 − λ_d − λ_lr), fused logits vs the full label),
        ``hr.loss_ce`` (×λ_d, detail logits vs the label and weight cropped
        to the box), accuracies (see :meth:`HRDAHead.hrda_loss`)."""
        head_out = HRDAHeadOutputs(
            outputs.logits, outputs.extras[HRDA_LR_KEY],
            outputs.extras[HRDA_HR_KEY], outputs.extras[HRDA_ATTENTION_KEY])
        return self.decode_head.hrda_loss(
            head_out, outputs.extras[HRDA_CROP_BOX_KEY], seg_label,
            seg_weight)

    def loss(self, inputs: Tensor, data_samples) -> dict:
        """Supervised HRDA training (plain mmseg use, no UDA)."""
        label = torch.stack(
            [s.gt_sem_seg.data.squeeze(0) for s in data_samples]).long()
        return add_prefix(self.uda_loss(self.uda_train_forward(inputs), label),
                          'decode')

    # ------------------------------------------------------------- inference
    def _check_slide_size(self, img: Tensor) -> None:
        h, w = img.shape[-2:]
        if self.crop_size[0] > h or self.crop_size[1] > w:
            raise ValueError(
                f'HRDAEncoderDecoder: hr_crop_size {self.crop_size} is larger '
                f'than the detail-scale image {h}x{w} of the detail slide '
                '(the test window test_cfg.crop_size times scales[1] must be '
                'at least hr_crop_size).')

    def _slide_features(self, img: Tensor) -> Tuple[list, List[CropBox]]:
        h, w = img.shape[-2:]
        boxes = detail_slide_boxes(h, w, self.crop_size,
                                   self.hr_slide_overlapping)
        crops = torch.cat([crop_to_box(img, b) for b in boxes], dim=0)
        return self.extract_unscaled_feat(crops), boxes

    def inference_logits(self, inputs: Tensor,
                         with_feat: bool = False):
        """Head outputs of HRDA's inference (context + detail slide)."""
        lr_scale, hr_scale = self.scales
        slide = self.hr_slide_inference and self.crop_size is not None
        hr_img = self._scaled_input(inputs, hr_scale)
        if slide:
            self._check_slide_size(hr_img)
        with torch.no_grad():
            lr_img = self._scaled_input(inputs, lr_scale)
        lr_feats = self.extract_unscaled_feat(lr_img)
        slide_boxes = None
        if slide:
            hr_feats, slide_boxes = self._slide_features(hr_img)
        else:
            hr_feats = self.extract_unscaled_feat(hr_img)
        return lr_feats, self.decode_head.forward_branches(
            [lr_feats, hr_feats], slide_boxes=slide_boxes,
            with_feat=with_feat)

    def encode_decode(self, inputs: Tensor,
                      batch_img_metas: List[dict]) -> Tensor:
        """Fused inference logits resized to the input (HRDA
        ``encode_decode``): pseudo-labels and test windows."""
        _, out = self.inference_logits(inputs)
        return resize(out.fused, size=inputs.shape[2:], mode='bilinear',
                      align_corners=self.align_corners)

    def uda_teacher_forward(self, img: Tensor,
                            with_feat: bool = False) -> SegOutputs:
        """Teacher forward for pseudo-labels: ``logits`` =
        :meth:`encode_decode` (input size), ``backbone`` = context
        features."""
        lr_feats, out = self.inference_logits(img, with_feat)
        logits = resize(out.fused, size=img.shape[2:], mode='bilinear',
                        align_corners=self.align_corners)
        return SegOutputs(backbone=tuple(lr_feats), logits=logits,
                          feat=out.feat)

    def slide_inference(self, inputs: Tensor,
                        batch_img_metas: List[dict]) -> Tensor:
        h_crop, w_crop = self.test_cfg.crop_size
        h, w = inputs.shape[-2:]
        if h_crop > h or w_crop > w:
            raise ValueError(
                f'HRDAEncoderDecoder: test_cfg.crop_size {(h_crop, w_crop)} '
                f'is larger than the image {h}x{w}; use a smaller window or '
                "test_cfg.mode='whole'.")
        return super().slide_inference(inputs, batch_img_metas)

    def _forward(self, inputs: Tensor, data_samples=None) -> Tensor:
        """Fused inference logits at the head's resolution."""
        return self.inference_logits(inputs)[1].fused
