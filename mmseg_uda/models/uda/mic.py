"""MIC, masked image consistency (Hoyer et al., "MIC: Masked Image
Consistency for Context-Enhanced Domain Adaptation", CVPR 2023).

The student sees a block-masked copy of the (colour-augmented) target batch
and is trained with the EMA teacher's pseudo-labels of the full, unmasked,
un-augmented target, weighted by their quality (paper Eq. 4–6):

    L_m = λ_m · mean_{pixels} q_T · CE(f_S(M ⊙ aug(x_T)), ŷ_T).

Reference behaviour (read, not copied): ``lhoyer/MIC`` @ 2f932a9,
``seg/mmseg/models/uda/masking_consistency_module.py``
(``MaskingConsistencyModule``: batch per ``mask_mode``, augmentation,
masking, ``mask_lambda``), its call site ``seg/mmseg/models/uda/dacs.py``
(the pseudo-label and the un-mixed pseudo-weight it receives),
``seg/mmseg/models/utils/masking_transforms.py`` and
``seg/configs/mic/gtaHR2csHR_mic_hrda.py`` / ``seg/experiments.py``.
VFM-UDA's token masking and target augmentation (options ``mask_generator=
dict(type='token')``, ``augmentation='vfm_uda'``): ``tue-mps/vfm-uda`` @
e154d8f, ``models/token_masking.py`` and
``training/uda_vit/uda_vit_generic.py`` (``training_step``).
"""
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmseg_uda.registry import MODELS
from ..utils.global_batch import global_indices
from ..utils.masking import BlockMaskGenerator
from ..utils.token_masking import (TokenMaskGenerator, token_masked,
                                   token_maskable_backbone)
from .base import BaseUDAMethod
from .context import UDAContext
from .dacs_transforms import color_jiggle, gaussian_blur
from .self_training import (PSEUDO_WEIGHT_KEY, SelfTraining,
                            confident_fraction, pseudo_weight_map,
                            student_weighted_loss, teacher_pseudo_labels,
                            valid_pseudo_mask)
from .vfm_uda_transforms import (VFM_UDA_STRONG_AUG, check_strong_aug_cfg,
                                 vfm_uda_strong_augment)

_SEED_MOD = 2**32
#: mask_mode -> (images of the masked batch, colour augmentation)
MASK_MODES = {
    'separatetrgaug': ('target', True),
    'separatetrg': ('target', False),
    'separate': ('source+target', False),
    'separateaug': ('source+target', True),
    'separatesrc': ('source', False),
    'separatesrcaug': ('source', True),
}


#: mask_generator types: MIC's pixel blocks, VFM-UDA's ViT patch tokens
MASK_GENERATORS = {'block': BlockMaskGenerator, 'token': TokenMaskGenerator}


def build_mask_generator(cfg: dict):
    """``dict(type='block', mask_ratio, mask_block_size)`` (MIC) or
    ``dict(type='token', mask_ratio)`` (VFM-UDA)."""
    if not isinstance(cfg, dict):
        raise TypeError('mask_generator must be a dict like '
                        "dict(type='block', mask_ratio=0.7, "
                        "mask_block_size=64) or dict(type='token', "
                        f'mask_ratio=0.7), got {cfg!r}.')
    kind = cfg.get('type')
    if kind not in MASK_GENERATORS:
        raise ValueError(
            f'mask_generator.type must be one of {sorted(MASK_GENERATORS)} '
            "('block': MIC's pixel blocks, 'token': VFM-UDA's ViT token "
            f'masking), got {kind!r}.')
    return MASK_GENERATORS[kind].build(cfg)


def mic_iteration_rng(seed: int, iteration: int) -> np.random.RandomState:
    """MIC's per-iteration draws (jitter gate, blur gate, blur σ). A seed
    sequence of its own length, so the stream differs from
    SelfTraining's ``iteration_rng`` / ``sample_rng`` for the same seed."""
    return np.random.RandomState(
        [seed % _SEED_MOD, iteration % _SEED_MOD, 2])


def mic_sample_rng(seed: int, iteration: int,
                   global_index: int) -> np.random.RandomState:
    """MIC's per-sample draws (jitter parameters, block mask), numbered by
    the sample's global index ``i * world_size + rank``."""
    return np.random.RandomState([
        seed % _SEED_MOD, iteration % _SEED_MOD, global_index % _SEED_MOD, 2
    ])


@MODELS.register_module()
class MaskedImageConsistency(BaseUDAMethod):
    """MIC's masked-image consistency loss as a composable method.

    List it **after** ``SelfTraining``: ``methods=[dict(type='SelfTraining',
    ...), dict(type='MaskedImageConsistency')]``. It then reuses the
    pseudo-labels and the *un-mixed* pseudo-weight (confident fraction q,
    ignored rows, valid mask) that SelfTraining computed from the EMA teacher
    in the same iteration, as MIC's ``dacs.py`` hands them to its module
    (``mask_alpha='same'``, ``mask_pseudo_threshold='same'``). Alone (e.g.
    on AdvEnt, as MIC's AdvSeg/MinEnt hosts) it computes them itself from
    ``UDASegmentor.teacher`` (``EMATeacherHook``) with ``pseudo_threshold``,
    the whole-batch confident fraction and ``pseudo_weight_ignore_top/
    bottom``.

    Per iteration:

    1. The masked batch per ``mask_mode``: ``'separatetrg[aug]'`` the target
       batch with (ŷ, w); ``'separate[aug]'`` (CS → ACDC / Dark Zurich)
       ``[x_s[0], x_t[0]]`` with labels ``[y_s[0], ŷ[0]]`` and weights
       ``[1, w[0]]``, which needs 2 images per process;
       ``'separatesrc[aug]'`` the source batch with its labels.
    2. Modes ending in ``aug``: DACS's colour jitter (when the iteration's
       U(0, 1) draw > ``color_jitter_probability``; per-image factors, as
       kornia's batch call in the official code) then Gaussian blur (when a
       second draw > 0.5) with **one σ ~ U(0.15, 1.15) for the whole
       batch** (the official ``strong_transform`` call on the batch; the
       ClassMix path of SelfTraining draws one per image).
    3. The block mask (:class:`BlockMaskGenerator`) on the normalised
       image, after the augmentation; or, with ``mask_generator=dict(
       type='token', ...)`` (VFM-UDA, Englert et al., CVPRW 2024), a token
       mask handed to the student's ViT backbone, which replaces the masked
       patch embeddings by its learned mask token in this forward only.
    4. ``loss_masked`` = ``mask_lambda`` · mean over pixels of
       w · CE(student(masked), label) (ignored labels count with CE 0), the
       host's decode loss as in ``model.forward_train(masked_img, ...,
       seg_weight=w)``.

    Randomness: the two gates and σ come from a generator seeded by
    ``(seed, iteration)``, the jitter parameters and the block mask of each
    image from one seeded by ``(seed, iteration, global sample index)``, so
    N processes compute what one process does with the global batch
    (except ``'separate'`` modes, which by definition take image 0 of each
    process's batch). The official code draws them from the global
    python/numpy/torch generators.

    Args:
        mask_mode (str): one of :data:`MASK_MODES`. MIC: ``'separatetrgaug'``
            (GTA/SYNTHIA → Cityscapes), ``'separate'`` (Cityscapes → ACDC /
            Dark Zurich).
        mask_generator (dict): ``dict(type='block', mask_ratio=r,
            mask_block_size=b)``. MIC: r = 0.7, b = 64 (HRDA, 1024 crops) or
            32 (DAFormer, 512 crops). Or ``dict(type='token',
            mask_ratio=r)`` (VFM-UDA, r = 0.7): instead of masking pixels,
            each ViT patch token of the student is replaced by the
            backbone's learned mask token with probability r
            (:class:`~mmseg_uda.models.utils.token_masking.
            TokenMaskGenerator`); needs a backbone with
            ``supports_token_mask`` (``DINOv2VisionTransformer``) in a plain
            ``EncoderDecoder`` student (not HRDA).
        mask_lambda (float): λ_m. MIC 1. (The official code scales only the
            ``decode.loss_seg`` key; with a plain decode head that is the
            whole loss.)
        mask_alpha (str): ``'same'``: the pseudo-labels come from the shared
            EMA teacher. A separate teacher with its own momentum (an
            ablation of the paper) is not implemented.
        mask_pseudo_threshold (str | float | None): ``'same'``: the host's
            pseudo-weight; a float: the confident fraction recomputed with
            this threshold from the same teacher prediction; None: weight 1
            (both keep the ignored rows / valid mask).
        pseudo_threshold (float): τ when no SelfTraining is listed. 0.968.
        pseudo_weight_ignore_top (int), pseudo_weight_ignore_bottom (int):
            rows with weight 0 when no SelfTraining is listed (MIC's
            AdvSeg/MinEnt hosts: 0, 0).
        color_jitter_strength (float), color_jitter_probability (float):
            MIC 0.2 / 0.2 (shared with DACS).
        blur (bool): allow the blur of step 2. The official module always
            draws and applies it (it ignores the host's ``blur`` flag).
        augmentation (str | dict): the colour augmentation of the ``aug``
            modes. ``'dacs'``: step 2 above (MIC). ``'vfm_uda'`` or
            ``dict(type='vfm_uda', color_jitter_strength=0.2,
            color_jitter_p=0.8, blur_p=0.5, blur_sigma=(0.15, 1.15))``
            (those are VFM-UDA's values, ``random_aug_uda``): torchvision's
            ColorJitter applied with probability ``color_jitter_p`` and the
            blur with ``blur_p``, each image with its own gates, factors and
            σ (:mod:`.vfm_uda_transforms`); ``color_jitter_strength``,
            ``color_jitter_probability`` and ``blur`` are then unused.
        mask_lambda_all_terms (bool): False (the official behaviour): with
            HRDA, ``mask_lambda`` scales only the fused term
            ``loss_masked``, not the detail term ``loss_masked_hr``; True
            scales both. Irrelevant at λ_m = 1 and for plain heads.
        seed (int | None): base seed; None draws one from torch's global
            generator at construction. Kept in the ``rng_seed`` buffer.
        loss_prefix (str): prefix of the logged keys. Default ``'mic'``.
    """
    requires_teacher = True
    student_domains = ('source', )
    needs_feat = False

    def __init__(self,
                 mask_mode: str = 'separatetrgaug',
                 mask_generator: Optional[dict] = None,
                 mask_lambda: float = 1.0,
                 mask_alpha: Union[str, float] = 'same',
                 mask_pseudo_threshold: Union[str, float, None] = 'same',
                 pseudo_threshold: float = 0.968,
                 pseudo_weight_ignore_top: int = 0,
                 pseudo_weight_ignore_bottom: int = 0,
                 color_jitter_strength: float = 0.2,
                 color_jitter_probability: float = 0.2,
                 blur: bool = True,
                 augmentation: Union[str, dict] = 'dacs',
                 mask_lambda_all_terms: bool = False,
                 seed: Optional[int] = None,
                 loss_prefix: Optional[str] = 'mic',
                 init_cfg: Optional[dict] = None):
        super().__init__(loss_prefix=loss_prefix, init_cfg=init_cfg)
        if mask_mode not in MASK_MODES:
            raise ValueError(
                f'MaskedImageConsistency: mask_mode must be one of '
                f'{sorted(MASK_MODES)}, got {mask_mode!r}.')
        if mask_generator is None:
            mask_generator = dict(
                type='block', mask_ratio=0.7, mask_block_size=64)
        self.mask_gen = build_mask_generator(mask_generator)
        self.mask_type = mask_generator['type']
        if augmentation == 'vfm_uda':
            augmentation = dict(type='vfm_uda', **VFM_UDA_STRONG_AUG)
        if augmentation == 'dacs':
            self.vfm_uda_aug = None
        elif isinstance(augmentation, dict) and \
                augmentation.get('type') == 'vfm_uda':
            aug = dict(augmentation)
            aug.pop('type')
            self.vfm_uda_aug = check_strong_aug_cfg(
                aug, 'MaskedImageConsistency.augmentation')
        else:
            raise ValueError(
                "MaskedImageConsistency: augmentation must be 'dacs', "
                "'vfm_uda' or dict(type='vfm_uda', ...), got "
                f'{augmentation!r}.')
        if not isinstance(mask_lambda, (int, float)) or mask_lambda < 0:
            raise ValueError('MaskedImageConsistency: mask_lambda must be a '
                             f'number >= 0, got {mask_lambda!r}.')
        if mask_alpha != 'same':
            raise ValueError(
                "MaskedImageConsistency: mask_alpha must be 'same' (the "
                'shared EMA teacher of UDASegmentor, EMATeacherHook). A '
                'separate MIC teacher with its own momentum (the paper\'s '
                f'"w/o EMA" ablation) is not supported; got {mask_alpha!r}.')
        if not (mask_pseudo_threshold in ('same', None) or
                (isinstance(mask_pseudo_threshold, float)
                 and 0.0 <= mask_pseudo_threshold <= 1.0)):
            raise ValueError(
                'MaskedImageConsistency: mask_pseudo_threshold must be '
                f"'same', None or a float in [0, 1], got "
                f'{mask_pseudo_threshold!r}.')
        if not 0.0 <= pseudo_threshold <= 1.0:
            raise ValueError('MaskedImageConsistency: pseudo_threshold must '
                             f'be in [0, 1], got {pseudo_threshold!r}.')
        if pseudo_weight_ignore_top < 0 or pseudo_weight_ignore_bottom < 0:
            raise ValueError('MaskedImageConsistency: '
                             'pseudo_weight_ignore_top/bottom must be >= 0.')
        if not 0.0 <= color_jitter_probability <= 1.0:
            raise ValueError('MaskedImageConsistency: '
                             'color_jitter_probability must be in [0, 1], '
                             f'got {color_jitter_probability!r}.')
        self.mask_mode = mask_mode
        self.mask_images, self.augment = MASK_MODES[mask_mode]
        self.mask_lambda = float(mask_lambda)
        self.mask_pseudo_threshold = mask_pseudo_threshold
        self.pseudo_threshold = pseudo_threshold
        self.pseudo_weight_ignore_top = pseudo_weight_ignore_top
        self.pseudo_weight_ignore_bottom = pseudo_weight_ignore_bottom
        self.color_jitter_strength = color_jitter_strength
        self.color_jitter_probability = color_jitter_probability
        self.blur = blur
        self.mask_lambda_all_terms = bool(mask_lambda_all_terms)
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()))
        self.register_buffer('rng_seed', torch.tensor(int(seed)))

    # ------------------------------------------------------ pseudo-labels
    def _host(self, ctx: UDAContext) -> Optional[SelfTraining]:
        """The SelfTraining method listed before this one, if any; raises
        if one is listed after (its pseudo-weight would not exist yet)."""
        methods = list(ctx.segmentor.methods)
        mine = next(i for i, m in enumerate(methods) if m is self)
        hosts = [(i, m) for i, m in enumerate(methods)
                 if isinstance(m, SelfTraining)]
        if not hosts:
            return None
        index, host = hosts[0]
        if index > mine:
            raise ValueError(
                'MaskedImageConsistency must come after SelfTraining in '
                "UDASegmentor's methods list (it reuses SelfTraining's "
                "pseudo-labels): methods=[dict(type='SelfTraining', ...), "
                "dict(type='MaskedImageConsistency', ...)].")
        return host

    def pseudo_labels(self, ctx: UDAContext) -> Tuple[Tensor, Tensor]:
        """(ŷ (B, H, W) int64, w (B, H, W) float) for the target batch."""
        host = self._host(ctx)
        # the host's pseudo-labels (flip-averaged if it uses VFM-UDA's flip)
        label, prob = teacher_pseudo_labels(
            ctx, flip=host.pseudo_label_flip if host is not None else None)
        extras = ctx.teacher_outputs('target').extras
        if self.mask_pseudo_threshold == 'same' and host is not None:
            if PSEUDO_WEIGHT_KEY not in extras:
                raise RuntimeError(
                    'MaskedImageConsistency found no pseudo-weight from '
                    'SelfTraining in this iteration.')
            return label, extras[PSEUDO_WEIGHT_KEY]
        if host is not None:
            scope = host.pseudo_weight_scope
            top = host.pseudo_weight_ignore_top
            bottom = host.pseudo_weight_ignore_bottom
        else:
            scope = 'batch'
            top = self.pseudo_weight_ignore_top
            bottom = self.pseudo_weight_ignore_bottom
        if self.mask_pseudo_threshold is None:
            fraction = torch.ones(label.shape[0], device=label.device)
        else:
            threshold = self.pseudo_threshold \
                if self.mask_pseudo_threshold == 'same' \
                else self.mask_pseudo_threshold
            fraction = confident_fraction(prob, threshold, scope)
        weight = pseudo_weight_map(fraction, label.shape, top, bottom)
        valid = valid_pseudo_mask(ctx)
        if valid is not None:
            weight = weight * valid
        return label, weight

    # ------------------------------------------------------------- batch
    def masked_batch(self, ctx: UDAContext) -> Tuple[Tensor, Tensor, Tensor]:
        """Images, labels (B, H, W) and pixel weights (B, H, W) of the
        masked pass, before augmentation and masking (``mask_mode``)."""
        if self.mask_images == 'source':
            label = ctx.src_label
            return ctx.img('source'), label, torch.ones_like(
                label, dtype=torch.float32)
        pseudo_label, pseudo_weight = self.pseudo_labels(ctx)
        tgt = ctx.img('target')
        if self.mask_images == 'target':
            return tgt, pseudo_label, pseudo_weight
        src = ctx.img('source')
        if src.shape[0] != 2 or tgt.shape[0] != 2:
            raise ValueError(
                f"MaskedImageConsistency: mask_mode={self.mask_mode!r} "
                'masks image 0 of the source and image 0 of the target batch '
                'and needs exactly 2 images per domain and process (MIC: '
                f'samples_per_gpu=2); got {src.shape[0]} source and '
                f'{tgt.shape[0]} target images. Set '
                'train_dataloader.batch_size=2.')
        if src.shape != tgt.shape:
            raise ValueError(
                f'MaskedImageConsistency: mask_mode={self.mask_mode!r} stacks '
                f'a source and a target image; got source {tuple(src.shape)} '
                f'and target {tuple(tgt.shape)}. Crop both to one size.')
        img = torch.stack([src[0], tgt[0]])
        label = torch.stack([ctx.src_label[0], pseudo_label[0]])
        weight = torch.stack(
            [torch.ones_like(pseudo_weight[0]), pseudo_weight[0]])
        return img, label, weight

    @torch.no_grad()
    def augment_batch(self, ctx: UDAContext, img: Tensor, jitter_draw: float,
                      blur_draw: float, sigma: float,
                      jitter_seeds: List[int]) -> Tensor:
        """DACS's ``strong_transform`` without mixing, on the whole batch:
        colour jitter on the de-normalised [0, 1] RGB image (per-image
        factors), then blur with one σ for the batch."""
        if jitter_draw > self.color_jitter_probability:
            img01 = ctx.denormalize(img) / 255.0
            rgb = bool(getattr(ctx.preprocessor, 'channel_conversion', False))
            if not rgb:
                img01 = img01.flip(1)
            img01 = color_jiggle(img01, self.color_jitter_strength,
                                 jitter_seeds)
            if not rgb:
                img01 = img01.flip(1)
            img = ctx.renormalize(img01 * 255.0)
        if self.blur and blur_draw > 0.5:
            img = gaussian_blur(img, [sigma] * img.shape[0])
        return img

    # ------------------------------------------------------------- loss
    def student_masked_loss(self, ctx: UDAContext, img: Tensor, label: Tensor,
                            weight: Tensor) -> Dict[str, Tensor]:
        """The student segmentor's own weighted training loss on the masked
        images (``model.forward_train(img, ..., seg_weight=weight)``):
        plain ``EncoderDecoder``: mean over pixels of w · CE of the logits
        resized to the label (``loss_masked``); ``HRDAEncoderDecoder``: its
        multi-resolution forward (a new detail box) and 0.9 · fused
        (``loss_masked``) + 0.1 · detail (``loss_masked_hr``)."""
        outputs = ctx.forward_student(img, with_feat=False)
        return student_weighted_loss(ctx, outputs, label, weight, 'masked')

    def token_masked_loss(self, ctx: UDAContext, img: Tensor, label: Tensor,
                          weight: Tensor, generators: List[torch.Generator]
                          ) -> Tuple[Dict[str, Tensor], Tensor, Tensor]:
        """VFM-UDA's masked loss: the student sees ``img`` with each ViT
        patch token replaced by the backbone's mask token with probability
        r (``VITLightweightHead.forward(img, mask_ratio=r)``), and is
        trained with the same weighted loss. Returns the losses, the image
        with the masked patches zeroed (for the debug picture only) and the
        keep mask (B, 1, H, W) upsampled from the token grid."""
        backbone = token_maskable_backbone(ctx.student,
                                           type(self).__name__)
        grid = backbone.token_grid(*img.shape[-2:])
        token_mask = self.mask_gen.generate_mask(grid, generators,
                                                 img.device)
        with token_masked(backbone, token_mask):
            losses = self.student_masked_loss(ctx, img, label, weight)
        losses['mask_keep_ratio'] = 1.0 - token_mask.float().mean()
        keep = F.interpolate((~token_mask)[:, None].float(),
                             size=img.shape[-2:], mode='nearest')
        return losses, img * keep.to(img.dtype), keep

    def loss(self, ctx: UDAContext) -> Dict[str, Tensor]:
        if self.mask_type == 'token':  # fail before any forward
            token_maskable_backbone(ctx.student, type(self).__name__)
        img, label, weight = self.masked_batch(ctx)
        seed = int(self.rng_seed)
        it_rng = mic_iteration_rng(seed, ctx.iter)
        # Fixed order, whether or not they are used: jitter gate, blur gate,
        # the batch's σ (MIC: random.uniform ×2, then np.random.uniform).
        jitter_draw = float(it_rng.uniform(0, 1))
        blur_draw = float(it_rng.uniform(0, 1))
        sigma = float(it_rng.uniform(0.15, 1.15))
        jitter_seeds, mask_gens, rngs = [], [], []
        # global sample index g = i * world_size + rank
        for g in global_indices(img.shape[0]):
            rng = mic_sample_rng(seed, ctx.iter, int(g))
            jitter_seeds.append(int(rng.randint(0, 2**31 - 1)))
            mask_gens.append(torch.Generator().manual_seed(
                int(rng.randint(0, 2**31 - 1))))
            rngs.append(rng)  # VFM-UDA's per-image draws come after these
        if self.augment and self.vfm_uda_aug is not None:
            img = vfm_uda_strong_augment(ctx, img, rngs, self.vfm_uda_aug)
        elif self.augment:
            img = self.augment_batch(ctx, img, jitter_draw, blur_draw, sigma,
                                     jitter_seeds)
        if self.mask_type == 'token':
            losses, masked_img, mask = self.token_masked_loss(
                ctx, img, label, weight, mask_gens)
        else:
            masked_img, mask = self.mask_gen.mask_image(img, mask_gens)
            losses = self.student_masked_loss(ctx, masked_img, label, weight)
        for key in list(losses):
            # MIC scales only decode.loss_seg (the fused term with HRDA)
            if key == 'loss_masked' or (self.mask_lambda_all_terms
                                        and key.startswith('loss_')):
                losses[key] = self.mask_lambda * losses[key]
        # token masks log the token fraction (exact), blocks the pixel one
        losses.setdefault('mask_keep_ratio', mask.mean())
        losses['masked_weight_mean'] = weight.mean().detach()
        if ctx.debug:
            ctx.add_debug_image('mic_masked_image', masked_img)
            ctx.add_debug_map('mic_mask', mask[:, 0].long())
        return losses
