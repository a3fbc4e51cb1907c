"""DACS/DAFormer self-training (lhoyer/DAFormer ``mmseg/models/uda/dacs.py``;
see docs/self_training.md): EMA-teacher pseudo-labels
on the target, ClassMix of source into target, strong augmentation, a
confidence-weighted cross-entropy on the mixed image and the ImageNet
feature distance on source thing classes.

Reference behaviour (read, not copied): ``lhoyer/DAFormer``
``mmseg/models/uda/dacs.py::DACS.forward_train`` and ``calc_feat_dist``,
``configs/_base_/uda/dacs.py``.
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.dist import all_reduce, get_dist_info
from mmseg.models.losses import accuracy
from mmseg.models.utils import resize
from torch import Tensor, nn

from mmseg_uda.registry import MODELS
from ..utils.global_batch import global_indices
from ..utils.seg_forward import (SegOutputs, feature_distance_input,
                                 segmentor_loss)
from .base import BaseUDAMethod
from .context import UDAContext
from .dacs_transforms import (CITYSCAPES_THING_CLASSES, class_mix_masks,
                              color_jiggle, downscale_label_ratio,
                              gaussian_blur, global_label_values,
                              iteration_rng, one_mix, sample_rng,
                              strong_augment_seeds)
from .vfm_uda_transforms import (VFM_UDA_STRONG_AUG, VFM_UDA_WEAK_JITTER,
                                 check_strong_aug_cfg, check_weak_jitter_cfg,
                                 vfm_uda_strong_augment, vfm_uda_weak_jitter)

#: Keys under which the teacher's target pseudo-labels are cached in
#: ``ctx.teacher_outputs('target').extras`` (shared with composed methods).
PSEUDO_LABEL_KEY = 'pseudo_label'
PSEUDO_PROB_KEY = 'pseudo_prob'
#: The un-mixed pseudo-weight map (B, H, W) SelfTraining computed this
#: iteration (confident fraction, ignored rows); MaskedImageConsistency
#: reuses it, as MIC's ``dacs.py`` hands ``pseudo_weight`` to its module.
PSEUDO_WEIGHT_KEY = 'pseudo_weight'
#: Whether the cached pseudo-labels are flip-averaged (bool).
PSEUDO_FLIP_KEY = 'pseudo_label_flip'


def teacher_pseudo_labels(ctx: UDAContext,
                          flip: Optional[bool] = None
                          ) -> Tuple[Tensor, Tensor]:
    """Teacher pseudo-labels of the un-augmented target batch.

    DAFormer: p = ``softmax(teacher.encode_decode(x_t))`` (logits bilinearly
    upsampled to the image size), ŷ = argmax_c p, confidence max_c p.
    ``flip=True`` (VFM-UDA, ``UDAVITGeneric.get_pseudo_label_and_weight``):
    p = (softmax(f(x_t)) + flip(softmax(f(flip(x_t))))) / 2 with a
    horizontal flip, then ŷ = argmax_c p and the confidence max_c p of the
    averaged softmax. Computed once per iteration and cached on the
    teacher's target outputs, so several methods share it.

    Args:
        flip: True/False asks for flip-averaged / plain pseudo-labels and
            raises if the cached ones are the other kind; None takes
            whatever this iteration cached (plain if nothing yet).

    Returns:
        (pseudo_label (B, H, W) int64, pseudo_prob (B, H, W) float32).
    """
    out = ctx.teacher_outputs('target')
    if PSEUDO_LABEL_KEY in out.extras:
        cached = bool(out.extras.get(PSEUDO_FLIP_KEY, False))
        if flip is not None and bool(flip) != cached:
            raise RuntimeError(
                f'Pseudo-labels were already computed with flip={cached} '
                f'in this iteration; a method asked for flip={bool(flip)}. '
                'Give every method the same pseudo_label_flip.')
        return out.extras[PSEUDO_LABEL_KEY], out.extras[PSEUDO_PROB_KEY]
    img = ctx.img('target')

    def softmax_at_image_size(logits: Tensor) -> Tensor:
        logits = resize(
            logits.detach().float(),
            size=img.shape[-2:],
            mode='bilinear',
            align_corners=ctx.teacher.align_corners)
        return torch.softmax(logits, dim=1)

    probs = softmax_at_image_size(out.logits)
    if flip:
        flipped = ctx.forward_teacher(img.flip(-1), with_feat=False)
        probs = (probs + softmax_at_image_size(flipped.logits).flip(-1)) / 2
    prob, label = probs.max(dim=1)
    out.extras[PSEUDO_LABEL_KEY] = label
    out.extras[PSEUDO_PROB_KEY] = prob
    out.extras[PSEUDO_FLIP_KEY] = bool(flip)
    return label, prob


def confident_fraction(pseudo_prob: Tensor, threshold: float,
                       scope: str) -> Tensor:
    """Fraction of pixels with max-probability ≥ ``threshold``.

    ``scope='batch'`` (DAFormer's code: ``sum(p ≥ τ) / np.size(pseudo_label)``
    over the whole batch, one scalar shared by all images; the sums are
    all-reduced so it is the global batch's fraction under DDP) or
    ``'image'`` (one scalar per image).

    Returns:
        (B,) float tensor (equal entries for ``'batch'``).
    """
    confident = (pseudo_prob >= threshold).flatten(1).float()
    if scope == 'image':
        return confident.mean(dim=1)
    counts = torch.stack([
        confident.sum(),
        torch.tensor(float(confident.numel()), device=confident.device)
    ])
    all_reduce(counts, op='sum')
    return (counts[0] / counts[1]).expand(pseudo_prob.shape[0])


def pseudo_weight_map(fraction: Tensor, shape: Sequence[int],
                      ignore_top: int, ignore_bottom: int) -> Tensor:
    """DAFormer's pseudo-weight map: the confident fraction of the image
    (or batch) on every pixel, 0 on the top ``ignore_top`` and bottom
    ``ignore_bottom`` rows (``pseudo_weight_ignore_top/bottom``: rectification
    artefacts of Cityscapes)."""
    b, h, w = shape
    weight = fraction.reshape(b, 1, 1).expand(b, h, w).clone()
    if ignore_top > 0:
        weight[:, :ignore_top, :] = 0
    if ignore_bottom > 0:
        weight[:, -ignore_bottom:, :] = 0
    return weight


def weighted_pixel_ce(logits: Tensor, label: Tensor, weight: Tensor,
                      ignore_index: int) -> Tensor:
    """mean over all pixels of weight · CE (ignored pixels count in the mean
    with CE 0): DAFormer's decode-head loss with ``seg_weight``
    (mmseg 0.x ``cross_entropy`` + ``weight_reduce_loss``, mean reduction)."""
    ce = F.cross_entropy(
        logits, label, reduction='none', ignore_index=ignore_index)
    return (ce * weight).mean()


def valid_pseudo_mask(ctx: UDAContext) -> Optional[Tensor]:
    """The target batch's ``valid_pseudo_mask`` (B, H, W) float (1 where a
    pseudo-label may be trusted, 0 on the rectification margins), from the
    pipeline's ``GenerateValidPseudoMask`` / ``PackSegInputsWithValidMask``;
    None when the pipeline provides none (HRDA ``crop_pseudo_margins``)."""
    samples = ctx.data_samples.get('target') or []
    if not samples or 'valid_pseudo_mask' not in samples[0]:
        return None
    mask = torch.stack(
        [s.valid_pseudo_mask.data.reshape(s.valid_pseudo_mask.data.shape[-2:])
         for s in samples]).float()
    img = ctx.img('target')
    if mask.shape[-2:] != img.shape[-2:]:
        raise ValueError(
            f'valid_pseudo_mask {tuple(mask.shape[-2:])} differs from the '
            f'target images {tuple(img.shape[-2:])}: put '
            'GenerateValidPseudoMask before the geometric transforms.')
    return mask.to(img.device)


def student_weighted_loss(ctx: UDAContext, outputs: SegOutputs,
                          label: Tensor, weight: Tensor,
                          name: str) -> Dict[str, Tensor]:
    """Pixel-weighted segmentation loss of a student training forward.

    Plain segmentor: ``loss_<name>`` = :func:`weighted_pixel_ce` of the
    logits upsampled to the label, ``<name>_acc_seg``. A segmentor with its
    own loss (``HRDAEncoderDecoder.uda_loss``): ``loss_<name>`` = its main
    term (HRDA: 0.9 · fused), ``loss_<name>_hr`` = its detail term (HRDA:
    0.1 · detail crop), the accuracies ``<name>_acc_seg`` /
    ``<name>_hr_acc_seg``. Used for the mixed image here and by composed
    methods (MIC's masked image)."""
    own = segmentor_loss(ctx.student, outputs, label, weight)
    if own is None:
        logits = resize(
            outputs.logits,
            size=label.shape[-2:],
            mode='bilinear',
            align_corners=ctx.student.align_corners)
        return {
            f'loss_{name}': weighted_pixel_ce(logits, label, weight,
                                              ctx.ignore_index),
            f'{name}_acc_seg': accuracy(
                logits.detach(), label, ignore_index=ctx.ignore_index),
        }
    losses: Dict[str, Tensor] = {}
    for key, value in own.items():
        branch, _, term = key.rpartition('.')
        suffix = f'_{branch}' if branch else ''
        if 'loss' in term:
            out_key = f'loss_{name}{suffix}'
            losses[out_key] = losses[out_key] + value \
                if out_key in losses else value
        else:
            losses[f'{name}{suffix}_{term}'] = value
    return losses


@MODELS.register_module()
class SelfTraining(BaseUDAMethod):
    """DACS/DAFormer self-training with an EMA teacher (Tranheden et al.,
    WACV 2021; Hoyer et al., CVPR 2022), code-exact to DAFormer's
    ``DACS.forward_train`` except where noted.

    Per iteration:

    1. Pseudo-labels ŷ = argmax softmax(teacher(x_t)) on the un-augmented
       target (:func:`teacher_pseudo_labels`); the teacher is
       ``UDASegmentor.teacher`` (EMA, ``EMATeacherHook``; Dropout/DropPath off
       in its forward).
    2. Pseudo-weight: the fraction of pixels with max-prob ≥
       ``pseudo_threshold`` (:func:`confident_fraction`), on every pixel,
       0 on the ignored top/bottom rows.
    3. ClassMix (:func:`class_mix_masks`): half of the candidate classes of
       the source label are pasted onto the target image; mixed label =
       source label where pasted, ŷ elsewhere; mixed weight = 1 where pasted,
       the pseudo-weight elsewhere.
    4. Strong augmentation of the mixed image: colour jitter (applied when
       the iteration's U(0,1) draw exceeds ``color_jitter_probability``, so
       with probability 1 − p as in DAFormer) on de-normalised [0, 1] RGB,
       then Gaussian blur (when ``blur`` and a second U(0,1) draw > 0.5),
       sigma ~ U(0.15, 1.15) per image.
    5. ``loss_mix`` = mean over pixels of weight · CE(student(x_mix), y_mix)
       (logits upsampled to the image size).
    6. ``loss_fd`` = λ_FD · mean over thing-class cells of
       ‖f_student(x_s) − f_ImageNet(x_s)‖₂ at the last encoder stage
       (:meth:`feature_distance`).

    The source cross-entropy is the pipeline's ``src.loss_ce``. DAFormer
    back-propagates the source (+FD) loss and the mix loss separately to
    save memory; here they are summed and back-propagated once, which gives
    the same gradients (backward is linear) and one DDP all-reduce.

    Distributed: quantities DAFormer computes over the batch (the ClassMix
    candidate classes, the ``'batch'`` pseudo-weight, the FD pixel count) are
    reduced over all processes, so N processes with B images each compute
    what one process does with N·B images. Random draws use generators
    seeded by ``(seed, iteration, global sample index)``
    (:mod:`.dacs_transforms`; the index is the sampler's,
    :mod:`mmseg_uda.models.utils.global_batch`).

    Args:
        pseudo_threshold (float): τ of the confident fraction. DAFormer 0.968.
        pseudo_weight_scope (str): ``'batch'`` (DAFormer's code: one fraction
            for the whole batch) or ``'image'`` (one per image).
        pseudo_weight_ignore_top (int): rows at the top with weight 0
            (DAFormer final config 15; DACS 0).
        pseudo_weight_ignore_bottom (int): rows at the bottom with weight 0
            (DAFormer 120; DACS 0).
        class_mix_candidates (str): ``'batch'`` (DAFormer/DACS code quirk:
            candidates are the classes of the whole source batch, 255
            included) or ``'image'`` (classes of the pasted image itself,
            the ClassMix paper).
        color_jitter_strength (float): s of brightness/contrast/saturation/
            hue. DAFormer 0.2.
        color_jitter_probability (float): p; jitter is applied when the draw
            exceeds p. DAFormer 0.2.
        blur (bool): Gaussian blur (applied when a U(0,1) draw > 0.5).
        imnet_feature_dist_lambda (float): λ_FD; 0 disables FD. DAFormer
            0.005.
        imnet_feature_dist_classes (Sequence[int] | None): classes whose
            (downscaled) source pixels enter FD; None = every pixel
            (DAFormer's ``dacs_fd``). Default: Cityscapes thing classes.
        imnet_feature_dist_scale_min_ratio (float): majority ratio of
            :func:`downscale_label_ratio`. DAFormer 0.75.
        imnet_feature_dist_encoder (dict | None): config of the student's
            backbone (in configs: ``{{_base_.model.backbone}}``), built as the
            frozen ImageNet encoder. Required when λ_FD > 0.
        imnet_feature_dist_init (str): ``'student'``: copy the student's
            backbone into the frozen encoder at the first training iteration
            of a fresh run (the student is then still the ImageNet-initialised
            encoder; a resumed run keeps the checkpointed copy, flagged by the
            ``imnet_initialized`` buffer). ``'pretrained'``: the encoder keeps
            the config's ``init_cfg`` and loads that checkpoint at the first
            iteration of a fresh run (use it when the student starts from
            another checkpoint, e.g. ``load_from`` a source-only model).
        seed (int | None): base seed of the random draws; None draws one
            from torch's global generator at construction (seeded by the
            Runner's ``randomness``). Stored in the ``rng_seed`` buffer, so
            checkpoints carry it.
        pseudo_label_flip (bool): VFM-UDA's flip-averaged pseudo-labels: the
            teacher's softmax is the mean of its softmax on x_t and the
            flipped-back softmax on the horizontally flipped x_t
            (:func:`teacher_pseudo_labels`; one more teacher forward). The
            label, the confidence and the confident fraction all come from
            the mean. Default False (DAFormer); VFM-UDA True.
        strong_augmentation (str | dict): augmentation of the mixed image.
            ``'dacs'``: step 4 above (DAFormer). ``'vfm_uda'`` or
            ``dict(type='vfm_uda', color_jitter_strength=0.2,
            color_jitter_p=0.8, blur_p=0.5, blur_sigma=(0.15, 1.15))``
            (VFM-UDA's ``random_aug_uda``): per image, torchvision's
            ColorJitter with probability ``color_jitter_p`` then the blur
            with probability ``blur_p`` (:mod:`.vfm_uda_transforms`);
            ``color_jitter_strength``/``_probability`` and ``blur`` are then
            unused.
        class_mix_target_jitter (None | str | dict): VFM-UDA's weak colour
            jitter of the target image before ClassMix pastes the source
            onto it (``random_aug_weak`` in ``get_mixed_source_and_target``):
            ``'vfm_uda'`` or ``dict(brightness=32 / 255, contrast=0.5,
            saturation=0.5, hue=18 / 360, p=0.9)`` (torchvision ColorJitter,
            applied per image with probability p). None (DAFormer): none.
    """
    requires_teacher = True
    student_domains = ('source', )
    needs_feat = False

    def __init__(self,
                 pseudo_threshold: float = 0.968,
                 pseudo_weight_scope: str = 'batch',
                 pseudo_weight_ignore_top: int = 15,
                 pseudo_weight_ignore_bottom: int = 120,
                 class_mix_candidates: str = 'batch',
                 color_jitter_strength: float = 0.2,
                 color_jitter_probability: float = 0.2,
                 blur: bool = True,
                 imnet_feature_dist_lambda: float = 0.005,
                 imnet_feature_dist_classes: Optional[Sequence[int]] = (
                     CITYSCAPES_THING_CLASSES),
                 imnet_feature_dist_scale_min_ratio: Optional[float] = 0.75,
                 imnet_feature_dist_encoder: Optional[dict] = None,
                 imnet_feature_dist_init: str = 'student',
                 seed: Optional[int] = None,
                 pseudo_label_flip: bool = False,
                 strong_augmentation='dacs',
                 class_mix_target_jitter=None,
                 loss_prefix: Optional[str] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(loss_prefix=loss_prefix, init_cfg=init_cfg)
        self.pseudo_label_flip = bool(pseudo_label_flip)
        if strong_augmentation == 'vfm_uda':
            strong_augmentation = dict(type='vfm_uda', **VFM_UDA_STRONG_AUG)
        if strong_augmentation == 'dacs':
            self.vfm_uda_strong_aug = None
        elif isinstance(strong_augmentation, dict) and \
                strong_augmentation.get('type') == 'vfm_uda':
            aug = dict(strong_augmentation)
            aug.pop('type')
            self.vfm_uda_strong_aug = check_strong_aug_cfg(
                aug, 'SelfTraining.strong_augmentation')
        else:
            raise ValueError(
                "SelfTraining: strong_augmentation must be 'dacs', 'vfm_uda' "
                f"or dict(type='vfm_uda', ...), got {strong_augmentation!r}.")
        if class_mix_target_jitter == 'vfm_uda':
            class_mix_target_jitter = dict(VFM_UDA_WEAK_JITTER)
        self.class_mix_target_jitter = None
        if class_mix_target_jitter is not None:
            self.class_mix_target_jitter = check_weak_jitter_cfg(
                class_mix_target_jitter,
                'SelfTraining.class_mix_target_jitter')
        if not 0.0 <= pseudo_threshold <= 1.0:
            raise ValueError('pseudo_threshold must be in [0, 1], got '
                             f'{pseudo_threshold}')
        if pseudo_weight_scope not in ('batch', 'image'):
            raise ValueError("pseudo_weight_scope must be 'batch' or "
                             f"'image', got {pseudo_weight_scope!r}")
        if class_mix_candidates not in ('batch', 'image'):
            raise ValueError("class_mix_candidates must be 'batch' or "
                             f"'image', got {class_mix_candidates!r}")
        if pseudo_weight_ignore_top < 0 or pseudo_weight_ignore_bottom < 0:
            raise ValueError('pseudo_weight_ignore_top/bottom must be >= 0')
        if imnet_feature_dist_init not in ('student', 'pretrained'):
            raise ValueError("imnet_feature_dist_init must be 'student' or "
                             f"'pretrained', got {imnet_feature_dist_init!r}")
        self.pseudo_threshold = pseudo_threshold
        self.pseudo_weight_scope = pseudo_weight_scope
        self.pseudo_weight_ignore_top = pseudo_weight_ignore_top
        self.pseudo_weight_ignore_bottom = pseudo_weight_ignore_bottom
        self.class_mix_candidates = class_mix_candidates
        self.color_jitter_strength = color_jitter_strength
        self.color_jitter_probability = color_jitter_probability
        self.blur = blur
        self.fd_lambda = float(imnet_feature_dist_lambda)
        self.fd_classes = None if imnet_feature_dist_classes is None \
            else tuple(int(c) for c in imnet_feature_dist_classes)
        self.fd_scale_min_ratio = imnet_feature_dist_scale_min_ratio
        self.fd_init = imnet_feature_dist_init
        if self.fd_classes is not None and self.fd_scale_min_ratio is None:
            raise ValueError(
                'imnet_feature_dist_classes needs '
                'imnet_feature_dist_scale_min_ratio (DAFormer: 0.75).')

        self.imnet_encoder: Optional[nn.Module] = None
        if self.fd_lambda > 0:
            if imnet_feature_dist_encoder is None:
                raise ValueError(
                    'SelfTraining: imnet_feature_dist_lambda > 0 needs '
                    'imnet_feature_dist_encoder, the config of the student '
                    "backbone (in a config: imnet_feature_dist_encoder="
                    '{{_base_.model.backbone}}); or set '
                    'imnet_feature_dist_lambda=0.')
            encoder_cfg = copy.deepcopy(dict(imnet_feature_dist_encoder))
            if self.fd_init == 'student':
                # Overwritten by the student copy at the first iteration.
                encoder_cfg.pop('init_cfg', None)
                encoder_cfg.pop('pretrained', None)
            elif not self._has_pretrained(encoder_cfg):
                raise ValueError(
                    "imnet_feature_dist_init='pretrained' needs a Pretrained "
                    'init_cfg in imnet_feature_dist_encoder.')
            self.imnet_encoder = MODELS.build(encoder_cfg)
            self.imnet_encoder.requires_grad_(False)
            self.imnet_encoder.eval()
        # 1 once the frozen encoder holds the ImageNet weights; checkpointed.
        self.register_buffer('imnet_initialized',
                             torch.tensor(0, dtype=torch.uint8))
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()))
        self.register_buffer('rng_seed', torch.tensor(int(seed)))

    @staticmethod
    def _has_pretrained(cfg: dict) -> bool:
        init = cfg.get('init_cfg')
        inits = init if isinstance(init, (list, tuple)) else [init]
        return bool(cfg.get('pretrained')) or any(
            isinstance(i, dict) and i.get('type') == 'Pretrained'
            for i in inits)

    # ----------------------------------------------------------- module API
    def frozen_modules(self) -> List[nn.Module]:
        return [self.imnet_encoder] if self.imnet_encoder is not None else []

    def train(self, mode: bool = True):
        """The frozen encoder always runs in eval mode (DAFormer calls
        ``imnet_model.eval()`` before every use)."""
        super().train(mode)
        if self.imnet_encoder is not None:
            self.imnet_encoder.eval()
        return self

    # ------------------------------------------------------ feature distance
    def _init_imnet_encoder(self, ctx: UDAContext) -> None:
        """Fill the frozen encoder at the first iteration of a fresh run
        (``imnet_initialized`` is 0): a copy of the student's backbone
        (``'student'``) or the encoder's own ``init_cfg`` checkpoint
        (``'pretrained'``). A checkpointed flag of 1 keeps the stored
        encoder."""
        if int(self.imnet_initialized):
            return
        if ctx.student.with_neck:
            raise TypeError(
                'SelfTraining feature distance compares the last backbone '
                'stage; a student with a neck is not supported.')
        if self.fd_init == 'pretrained':
            # Done here rather than relying on the parent's init_weights
            # reaching this module; a no-op if it already ran.
            if not getattr(self.imnet_encoder, '_is_init', False):
                self.imnet_encoder.init_weights()
        else:
            try:
                with torch.no_grad():
                    self.imnet_encoder.load_state_dict(
                        ctx.student.backbone.state_dict())
            except RuntimeError as err:
                raise RuntimeError(
                    'SelfTraining: imnet_feature_dist_encoder is not the '
                    "student's backbone architecture (use "
                    '{{_base_.model.backbone}}): ' + str(err)) from err
        self.imnet_initialized.fill_(1)

    def feature_distance(self, ctx: UDAContext) -> Tuple[Tensor, Dict]:
        """ImageNet feature distance (DAFormer ``calc_feat_dist``).

        d = ‖f_s − f_I‖₂ per cell of the last encoder stage between the
        student and the frozen ImageNet encoder (eval mode, no gradient) on
        the source images; mean over the cells whose label, downscaled with
        :func:`downscale_label_ratio`, is a thing class (all cells when
        ``imnet_feature_dist_classes`` is None); times λ_FD. The cell count
        is all-reduced (mean over the global batch); with no thing cell the
        loss is 0 (DAFormer would log NaN).
        """
        self._init_imnet_encoder(ctx)
        student_feat = ctx.student_outputs('source').backbone[-1]
        with torch.no_grad():
            self.imnet_encoder.eval()
            # HRDA: the student's features are the context branch's, so
            # the frozen encoder sees the image downscaled the same way.
            imnet_feat = self.imnet_encoder(
                feature_distance_input(ctx.student,
                                       ctx.img('source')))[-1].detach()
        if imnet_feat.shape != student_feat.shape:
            raise RuntimeError(
                f'Frozen encoder feature {tuple(imnet_feat.shape)} differs '
                f'from the student\'s {tuple(student_feat.shape)}.')
        dist = torch.norm(student_feat - imnet_feat, dim=1, p=2)
        logs = {}
        if self.fd_classes is None:
            mask = torch.ones_like(dist, dtype=torch.bool)
        else:
            label = ctx.src_label
            scale = label.shape[-1] // dist.shape[-1]
            rescaled = downscale_label_ratio(label, scale,
                                             self.fd_scale_min_ratio,
                                             ctx.num_classes,
                                             ctx.ignore_index)
            if rescaled.shape != dist.shape:
                raise RuntimeError(
                    f'Source label {tuple(label.shape[-2:])} downscaled by '
                    f'{scale} gives {tuple(rescaled.shape[-2:])}, but the '
                    'last encoder stage is '
                    f'{tuple(dist.shape[-2:])}: crop sizes must be multiples '
                    'of the encoder stride.')
            classes = torch.tensor(self.fd_classes, device=label.device)
            mask = torch.isin(rescaled, classes)
            if ctx.debug:
                ctx.add_debug_map('fd_mask', mask.long())
        count = mask.sum().to(dist.dtype).reshape(1)
        all_reduce(count, op='sum')
        _, world_size = get_dist_info()
        # DDP averages gradients over processes: scaling by world_size makes
        # the result the mean over the global batch's cells.
        loss = dist[mask].sum() * world_size / count.clamp(min=1.0)[0]
        logs['fd_cell_ratio'] = count[0] / (dist.numel() * world_size)
        return self.fd_lambda * loss, logs

    # ------------------------------------------------------------- mixing
    def _rgb_order(self, ctx: UDAContext) -> bool:
        """Network inputs are RGB when the preprocessor converts BGR->RGB
        (same convention as ``to_rgb_uint8``)."""
        return bool(getattr(ctx.preprocessor, 'channel_conversion', False))

    @torch.no_grad()
    def strong_augment(self, ctx: UDAContext, img: Tensor,
                       jitter_draw: float, blur_draw: float,
                       seeds: Sequence[tuple]) -> Tensor:
        """DAFormer's ``color_jitter`` + ``gaussian_blur`` on normalised
        images: jitter on the de-normalised [0, 1] RGB image, re-normalised
        with the data preprocessor's mean/std; then blur."""
        if jitter_draw > self.color_jitter_probability:
            img01 = ctx.denormalize(img) / 255.0
            rgb = self._rgb_order(ctx)
            if not rgb:
                img01 = img01.flip(1)
            img01 = color_jiggle(img01, self.color_jitter_strength,
                                 [s for s, _ in seeds])
            if not rgb:
                img01 = img01.flip(1)
            img = ctx.renormalize(img01 * 255.0)
        if blur_draw > 0.5:
            img = gaussian_blur(img, [sigma for _, sigma in seeds])
        return img

    def _check_inputs(self, ctx: UDAContext) -> None:
        src, tgt = ctx.img('source'), ctx.img('target')
        if src.shape != tgt.shape:
            raise ValueError(
                'SelfTraining mixes source into target images, so both '
                f'batches must have one shape; got source {tuple(src.shape)} '
                f'and target {tuple(tgt.shape)}. Crop both domains to the '
                'same size (DAFormer: 512x512).')
        if tuple(ctx.src_label.shape[-2:]) != tuple(src.shape[-2:]):
            raise ValueError(
                f'Source labels {tuple(ctx.src_label.shape)} do not match the '
                f'source images {tuple(src.shape)}.')

    # --------------------------------------------------------------- loss
    def loss(self, ctx: UDAContext) -> Dict[str, Tensor]:
        self._check_inputs(ctx)
        src_img, tgt_img = ctx.img('source'), ctx.img('target')
        batch_size = src_img.shape[0]
        seed = int(self.rng_seed)
        it_rng = iteration_rng(seed, ctx.iter)
        jitter_draw = float(it_rng.uniform(0, 1))
        blur_draw = float(it_rng.uniform(0, 1)) if self.blur else 0.0
        rngs = [
            sample_rng(seed, ctx.iter, int(g))
            for g in global_indices(batch_size)  # i·world_size + rank
        ]
        losses: Dict[str, Tensor] = {}

        if self.imnet_encoder is not None:
            losses['loss_fd'], fd_logs = self.feature_distance(ctx)
            losses.update(fd_logs)

        # Pseudo-labels and their weight.
        pseudo_label, pseudo_prob = teacher_pseudo_labels(
            ctx, flip=self.pseudo_label_flip)
        fraction = confident_fraction(pseudo_prob, self.pseudo_threshold,
                                      self.pseudo_weight_scope)
        pseudo_weight = pseudo_weight_map(fraction, pseudo_label.shape,
                                          self.pseudo_weight_ignore_top,
                                          self.pseudo_weight_ignore_bottom)
        valid = valid_pseudo_mask(ctx)
        if valid is not None:
            if self.pseudo_weight_ignore_top or \
                    self.pseudo_weight_ignore_bottom:
                raise ValueError(
                    'SelfTraining: the target pipeline provides '
                    'valid_pseudo_mask (GenerateValidPseudoMask), so '
                    'pseudo_weight_ignore_top/bottom must be 0 (HRDA asserts '
                    'the same); the margins belong in the transform.')
            pseudo_weight = pseudo_weight * valid
        ctx.teacher_outputs('target').extras[PSEUDO_WEIGHT_KEY] = \
            pseudo_weight

        # ClassMix.
        src_label = ctx.src_label
        candidates = None
        if self.class_mix_candidates == 'batch':
            num_values = max(ctx.num_classes, ctx.ignore_index + 1)
            candidates = global_label_values(src_label, num_values)
        mix_mask = class_mix_masks(src_label, rngs, candidates)
        aug_seeds = strong_augment_seeds(rngs)
        # VFM-UDA's per-image draws follow DAFormer's in each sample's stream
        if self.class_mix_target_jitter is not None:
            tgt_img = vfm_uda_weak_jitter(ctx, tgt_img, rngs,
                                          self.class_mix_target_jitter)
        mixed_img = one_mix(mix_mask, src_img, tgt_img)
        mixed_label = one_mix(mix_mask, src_label, pseudo_label)
        mixed_weight = one_mix(mix_mask, torch.ones_like(pseudo_weight),
                               pseudo_weight)
        if self.vfm_uda_strong_aug is not None:
            mixed_img = vfm_uda_strong_augment(ctx, mixed_img, rngs,
                                               self.vfm_uda_strong_aug)
        else:
            mixed_img = self.strong_augment(ctx, mixed_img, jitter_draw,
                                            blur_draw, aug_seeds)

        losses.update(
            student_weighted_loss(
                ctx, ctx.forward_student(mixed_img, with_feat=False),
                mixed_label, mixed_weight, 'mix'))
        losses['pseudo_conf_ratio'] = fraction.mean().detach()
        losses['mix_weight_mean'] = mixed_weight.mean().detach()

        if ctx.debug:
            ctx.add_debug_map('pseudo_label', pseudo_label)
            ctx.add_debug_map('mix_mask', mix_mask.long())
            ctx.add_debug_image('mixed_image', mixed_img)
            ctx.add_debug_map('mixed_label', mixed_label)
        return losses
