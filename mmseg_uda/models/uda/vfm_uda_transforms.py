"""VFM-UDA's per-image photometric augmentations (Englert et al., CVPRW
2024), as options of ``SelfTraining`` and ``MaskedImageConsistency``.

Reference behaviour (read, not copied): ``tue-mps/vfm-uda`` @ e154d8f,
``training/uda_vit/uda_vit_generic.py::UDAVITGeneric.__init__`` (lines
80–108) and their call sites in ``train_dataprep`` /
``get_mixed_source_and_target`` / ``training_step``:

* ``random_aug_uda`` (strong; the mixed image and the masked target):
  torchvision ``RandomApply([ColorJitter(0.2, 0.2, 0.2, 0.2)], p=0.8)``
  then ``RandomApply([GaussianBlur(k, sigma=(0.15, 1.15))], p=0.5)`` with
  k = ⌊⌈0.1·S⌉ − 0.5 + ⌈0.1·S⌉ mod 2⌋ (S the crop side: 103 at 1024),
  applied to **each image separately** (its own gates, factors, order and
  σ) on the [0, 1] RGB image;
* ``random_aug_weak`` (the source image of the supervised loss and the
  target image pasted under ClassMix): ``RandomApply([ColorJitter(
  brightness=32/255, contrast=0.5, saturation=0.5, hue=18/360)], p=0.9)``,
  per image.

DAFormer/MIC's ``strong_transform`` differs: one jitter gate for the batch
(and for MIC one σ for the batch) and kornia-0.5 ``ColorJitter`` semantics
(additive brightness, ``ColorJiggle`` today). Torchvision's formulas
(multiplicative brightness, contrast blended with the grey mean, saturation
with the grey image, hue shift) are kornia's ``ColorJitter``, used here with
per-image parameters drawn under a per-sample seed.

The blur uses the kernel formula on each side of the image
(:func:`~.dacs_transforms.blur_kernel_size`), equal to the official one for
the square crops VFM-UDA trains on; it is applied to the normalised image,
which equals normalising the blurred [0, 1] image (unit-sum kernel,
per-channel affine normalisation, reflect border).
"""
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from kornia.augmentation import ColorJitter
from torch import Tensor

from .dacs_transforms import apply_per_image_seeded, gaussian_blur

#: VFM-UDA's ``random_aug_uda`` (strong): jitter strength s for all four
#: factors, RandomApply probabilities of jitter and blur, blur σ range.
VFM_UDA_STRONG_AUG = dict(
    color_jitter_strength=0.2, color_jitter_p=0.8, blur_p=0.5,
    blur_sigma=(0.15, 1.15))
#: VFM-UDA's ``random_aug_weak``: torchvision ColorJitter arguments and p.
VFM_UDA_WEAK_JITTER = dict(
    brightness=32 / 255, contrast=0.5, saturation=0.5, hue=18 / 360, p=0.9)


class ImageAugDraws(NamedTuple):
    """One image's draws of a ``RandomApply(jitter) → RandomApply(blur)``
    chain (blur fields unused for the weak jitter)."""
    jitter: bool
    jitter_seed: int
    blur: bool
    sigma: float


def draw_image_aug(rng: np.random.RandomState, jitter_p: float,
                   blur_p: float = 0.0,
                   blur_sigma: Tuple[float, float] = (0.15, 1.15)
                   ) -> ImageAugDraws:
    """Draw one image's gates, jitter seed and σ from ``rng`` in a fixed
    order (jitter gate, jitter seed, blur gate, σ), all four whether or not
    they are used. torchvision's ``RandomApply`` applies when U(0, 1) < p
    (it skips when ``p < torch.rand(1)``)."""
    jitter = float(rng.uniform(0, 1)) < jitter_p
    seed = int(rng.randint(0, 2**31 - 1))
    blur = float(rng.uniform(0, 1)) < blur_p
    sigma = float(rng.uniform(*blur_sigma))
    return ImageAugDraws(jitter, seed, blur, sigma)


def torchvision_jitter_module(brightness: float, contrast: float,
                              saturation: float, hue: float) -> ColorJitter:
    """kornia's ``ColorJitter`` (torchvision's formulas: brightness
    ``blend(img, 0, b)``, contrast ``blend(img, mean(grey), c)``, saturation
    ``blend(img, grey, s)``, hue shift in HSV, each clamped to [0, 1]),
    always applied (the gate is drawn separately)."""
    return ColorJitter(brightness=brightness, contrast=contrast,
                       saturation=saturation, hue=hue, p=1.0)


def torchvision_color_jitter(img01: Tensor, seeds: Sequence[int],
                             brightness: float, contrast: float,
                             saturation: float, hue: float) -> Tensor:
    """torchvision ``ColorJitter(brightness, contrast, saturation, hue)`` on
    each RGB image in [0, 1] (B, 3, H, W) separately: random order of the
    four ops and factors b ∈ [1 − brightness, 1 + brightness], c, s alike,
    h ∈ [−hue, hue], drawn under ``torch.manual_seed(seed)`` in a forked CPU
    RNG (the global RNG stays untouched). kornia's ``ColorJitter``
    implements torchvision's formulas."""
    if len(seeds) != img01.shape[0]:
        raise ValueError(f'{len(seeds)} seeds for {img01.shape[0]} images')
    jitter = torchvision_jitter_module(brightness, contrast, saturation, hue)
    return apply_per_image_seeded(jitter, img01, seeds)


@torch.no_grad()
def random_apply_jitter_blur(ctx, img: Tensor, draws: List[ImageAugDraws],
                             brightness: float, contrast: float,
                             saturation: float, hue: float,
                             with_blur: bool = True) -> Tensor:
    """VFM-UDA's per-image ``RandomApply(ColorJitter) → RandomApply(
    GaussianBlur)`` on a normalised batch: the jitter on the de-normalised
    [0, 1] RGB image of the images whose jitter gate opened, re-normalised
    with the data preprocessor's mean/std; then the blur (σ per image) of
    the images whose blur gate opened."""
    if len(draws) != img.shape[0]:
        raise ValueError(f'{len(draws)} draws for {img.shape[0]} images')
    img = img.clone()
    jittered = [i for i, d in enumerate(draws) if d.jitter]
    if jittered:
        idx = torch.tensor(jittered, device=img.device)
        img01 = ctx.denormalize(img[idx]) / 255.0
        rgb = bool(getattr(ctx.preprocessor, 'channel_conversion', False))
        if not rgb:
            img01 = img01.flip(1)
        img01 = torchvision_color_jitter(
            img01, [draws[i].jitter_seed for i in jittered], brightness,
            contrast, saturation, hue)
        if not rgb:
            img01 = img01.flip(1)
        img[idx] = ctx.renormalize(img01 * 255.0).to(img.dtype)
    blurred = [i for i, d in enumerate(draws) if d.blur] if with_blur else []
    if blurred:
        idx = torch.tensor(blurred, device=img.device)
        # (autocast may run the blur convolution in bfloat16)
        img[idx] = gaussian_blur(img[idx],
                                 [draws[i].sigma for i in blurred]).to(
                                     img.dtype)
    return img


def vfm_uda_strong_augment(ctx, img: Tensor,
                           rngs: Sequence[np.random.RandomState],
                           cfg: Optional[dict] = None) -> Tensor:
    """``random_aug_uda`` on a normalised batch, one ``rng`` per image
    (draws of :func:`draw_image_aug`). ``cfg`` defaults to
    :data:`VFM_UDA_STRONG_AUG`."""
    cfg = dict(VFM_UDA_STRONG_AUG if cfg is None else cfg)
    draws = [
        draw_image_aug(rng, cfg['color_jitter_p'], cfg['blur_p'],
                       tuple(cfg['blur_sigma'])) for rng in rngs
    ]
    s = cfg['color_jitter_strength']
    return random_apply_jitter_blur(ctx, img, draws, s, s, s, s)


def vfm_uda_weak_jitter(ctx, img: Tensor,
                        rngs: Sequence[np.random.RandomState],
                        cfg: Optional[dict] = None) -> Tensor:
    """``random_aug_weak`` on a normalised batch, one ``rng`` per image.
    ``cfg`` defaults to :data:`VFM_UDA_WEAK_JITTER`."""
    cfg = dict(VFM_UDA_WEAK_JITTER if cfg is None else cfg)
    draws = [draw_image_aug(rng, cfg['p']) for rng in rngs]
    return random_apply_jitter_blur(
        ctx, img, draws, cfg['brightness'], cfg['contrast'],
        cfg['saturation'], cfg['hue'], with_blur=False)


def check_strong_aug_cfg(cfg: dict, owner: str) -> dict:
    """Validate a ``random_aug_uda``-style config dict."""
    keys = set(VFM_UDA_STRONG_AUG)
    if not isinstance(cfg, dict) or set(cfg) != keys:
        raise ValueError(
            f'{owner}: the VFM-UDA strong augmentation config needs exactly '
            f'the keys {sorted(keys)} (VFM-UDA: {VFM_UDA_STRONG_AUG}); got '
            f'{cfg!r}.')
    for key in ('color_jitter_p', 'blur_p'):
        if not 0.0 <= cfg[key] <= 1.0:
            raise ValueError(f'{owner}: {key} must be in [0, 1], got '
                             f'{cfg[key]!r}.')
    return dict(cfg)


def check_weak_jitter_cfg(cfg: dict, owner: str) -> dict:
    """Validate a ``random_aug_weak``-style config dict."""
    keys = set(VFM_UDA_WEAK_JITTER)
    if not isinstance(cfg, dict) or set(cfg) != keys:
        raise ValueError(
            f'{owner}: the VFM-UDA weak jitter config needs exactly the keys '
            f'{sorted(keys)} (VFM-UDA: {VFM_UDA_WEAK_JITTER}); got {cfg!r}.')
    if not 0.0 <= cfg['p'] <= 1.0:
        raise ValueError(f"{owner}: p must be in [0, 1], got {cfg['p']!r}.")
    return dict(cfg)
