"""ClassMix, strong augmentation and label helpers of DACS/DAFormer
self-training (Tranheden et al., WACV 2021; Hoyer et al., CVPR 2022),
written against mmseg 1.x tensors.

Reference behaviour (read, not copied): ``lhoyer/DAFormer``
``mmseg/models/utils/dacs_transforms.py`` (``get_class_masks``,
``generate_class_mask``, ``one_mix``, ``color_jitter``, ``gaussian_blur``)
and ``mmseg/utils/utils.py::downscale_label_ratio``.

Randomness: DAFormer draws from the process-global ``random``/``np.random``/
``torch`` generators. Here every draw comes from an explicitly seeded
generator (:func:`iteration_rng`, :func:`sample_rng`), so a sample's ClassMix
classes, jitter parameters and blur sigma depend only on
``(seed, iteration, global sample index)``: the same with 1 or N processes,
and reproducible after a resume.
"""
import math
from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from kornia.augmentation import ColorJiggle
from kornia.filters import GaussianBlur2d
from mmengine.dist import all_reduce
from torch import Tensor

#: DAFormer's Cityscapes "thing" classes for the ImageNet feature distance
#: (traffic light, sign, person, rider, car, truck, bus, train, motorcycle,
#: bicycle; ``configs/daformer/gta2cs_uda_warm_fdthings_rcs_croppl_a999_*``).
CITYSCAPES_THING_CLASSES = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)

_SEED_MOD = 2**32


def iteration_rng(seed: int, iteration: int) -> np.random.RandomState:
    """Generator of the draws DAFormer makes once per iteration and shares
    across the batch (whether to colour-jitter, whether to blur)."""
    return np.random.RandomState([seed % _SEED_MOD, iteration % _SEED_MOD])


def sample_rng(seed: int, iteration: int,
               global_index: int) -> np.random.RandomState:
    """Generator of the draws DAFormer makes per image (ClassMix classes,
    jitter parameters, blur sigma). ``global_index`` is the sample's position
    in the global batch of this iteration (``i * world_size + rank`` for the
    i-th local sample: mmengine's samplers and ``UDAPairSampler`` give rank r
    the elements r, r + world_size, ...; computed by
    :func:`mmseg_uda.models.utils.global_batch.global_indices`)."""
    return np.random.RandomState(
        [seed % _SEED_MOD, iteration % _SEED_MOD, global_index % _SEED_MOD,
         1])


def num_mixed_classes(num_candidates: int) -> int:
    """ceil(n / 2): DAFormer's ``int((n + n % 2) / 2)``."""
    return (num_candidates + num_candidates % 2) // 2


def global_label_values(labels: Tensor, num_values: int) -> Tensor:
    """Sorted label values present in ``labels`` on any process (the union
    over the global batch; ``torch.unique`` when not distributed).

    Args:
        labels: integer labels, any shape, values in ``[0, num_values)``.
        num_values: size of the value range (same on every process).
    """
    flat = labels.reshape(-1).long()
    if flat.numel() and (flat.min() < 0 or flat.max() >= num_values):
        raise ValueError(
            f'Label values must lie in [0, {num_values}) for ClassMix, got '
            f'min {int(flat.min())}, max {int(flat.max())}.')
    present = torch.bincount(flat, minlength=num_values).clamp_(max=1)
    present = present.to(torch.float32)
    all_reduce(present, op='sum')
    return torch.nonzero(present > 0).flatten()


def class_mix_masks(labels: Tensor,
                    rngs: Sequence[np.random.RandomState],
                    candidates: Optional[Tensor] = None) -> Tensor:
    """ClassMix masks as DAFormer's ``get_class_masks``.

    For image i, ceil(n/2) of the n candidate classes are chosen with
    ``rngs[i].choice(n, ceil(n/2), replace=False)`` and the mask is 1 where
    the image's label is one of them. DAFormer's candidates are
    ``torch.unique`` over the **whole batch** of source labels (so a chosen
    class may be absent from image i, and 255 can be chosen, pasting the
    ignored pixels); pass ``candidates=None`` for per-image candidates
    (``torch.unique(labels[i])``, the original ClassMix).

    Args:
        labels: source labels (B, H, W), integer.
        rngs: one generator per image.
        candidates: sorted 1-D tensor of candidate label values shared by all
            images, or None for per-image candidates.

    Returns:
        Bool masks (B, H, W): True where the source pixel is pasted.
    """
    if labels.dim() != 3:
        raise ValueError(
            f'labels must be (B, H, W), got {tuple(labels.shape)}')
    if len(rngs) != labels.shape[0]:
        raise ValueError(f'{len(rngs)} generators for {labels.shape[0]} '
                         'images')
    masks = []
    for label, rng in zip(labels, rngs):
        classes = torch.unique(label) if candidates is None else candidates
        n = int(classes.numel())
        choice = rng.choice(n, num_mixed_classes(n), replace=False)
        chosen = classes[torch.as_tensor(
            choice, dtype=torch.long, device=classes.device)]
        masks.append(torch.isin(label, chosen.to(label.device)))
    return torch.stack(masks)


def one_mix(mask: Tensor, foreground: Tensor, background: Tensor) -> Tensor:
    """DAFormer's ``one_mix``: ``mask·fg + (1 − mask)·bg`` for a binary mask
    (B, H, W), on images (B, C, H, W) or maps (B, H, W)."""
    if mask.dtype != torch.bool:
        mask = mask.bool()
    if foreground.dim() == mask.dim() + 1:
        mask = mask.unsqueeze(1)
    return torch.where(mask, foreground, background)


def color_jiggle(img01: Tensor, strength: float,
                 seeds: Sequence[int]) -> Tensor:
    """DAFormer's colour jitter on RGB images in [0, 1] (B, 3, H, W).

    ``kornia.augmentation.ColorJiggle(brightness=s, contrast=s,
    saturation=s, hue=s)`` is kornia-0.5.8's ``ColorJitter`` that DAFormer
    used (additive brightness, random order of the four ops). DAFormer
    applies it to one image at a time, so each image gets its
    own factors and order; those are drawn under ``torch.manual_seed(seed)``
    in a forked CPU RNG (kornia samples on the CPU), leaving the global RNG
    untouched.
    """
    if len(seeds) != img01.shape[0]:
        raise ValueError(f'{len(seeds)} seeds for {img01.shape[0]} images')
    jiggle = ColorJiggle(
        brightness=strength, contrast=strength, saturation=strength,
        hue=strength, p=1.0)
    return apply_per_image_seeded(jiggle, img01, seeds)


def apply_per_image_seeded(aug, img01: Tensor,
                           seeds: Sequence[int]) -> Tensor:
    """A kornia augmentation on each image separately, its parameters
    drawn under ``torch.manual_seed(seed)`` in a forked CPU RNG (kornia
    samples on the CPU; the global RNG stays untouched)."""
    out = []
    for img, seed in zip(img01, seeds):
        img = img.unsqueeze(0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            params = aug.forward_parameters(img.shape)
        params = {
            k: v.to(img.device) if torch.is_tensor(v) else v
            for k, v in params.items()
        }
        out.append(aug(img, params=params))
    return torch.cat(out)


def blur_kernel_size(length: int) -> int:
    """DAFormer's kernel size for a side of ``length`` pixels: ceil(0.1·L)
    made odd by subtracting one if it is even
    (``floor(ceil(0.1 L) − 0.5 + ceil(0.1 L) % 2)``)."""
    k = math.ceil(0.1 * length)
    return int(math.floor(k - 0.5 + k % 2))


def gaussian_blur(img: Tensor, sigmas: Sequence[float]) -> Tensor:
    """DAFormer's ``gaussian_blur`` (``kornia.filters.GaussianBlur2d`` with a
    kernel of ~10 % of the image side, reflect border), one sigma per image.
    Blur is linear with unit-sum kernels, so it commutes with the per-channel
    normalisation and DAFormer applies it to the normalised image."""
    if len(sigmas) != img.shape[0]:
        raise ValueError(f'{len(sigmas)} sigmas for {img.shape[0]} images')
    kernel = (blur_kernel_size(img.shape[2]), blur_kernel_size(img.shape[3]))
    out = []
    for one, sigma in zip(img, sigmas):
        blur = GaussianBlur2d(kernel, (float(sigma), float(sigma)))
        out.append(blur(one.unsqueeze(0)))
    return torch.cat(out)


def downscale_label_ratio(label: Tensor, scale_factor: int, min_ratio: float,
                          num_classes: int,
                          ignore_index: int = 255) -> Tensor:
    """DAFormer's ``downscale_label_ratio``: per ``scale_factor``² block the
    majority class if it covers at least ``min_ratio`` of the block, else
    ``ignore_index`` (ignored pixels count as their own class, so a block
    that is mostly void is ignored).

    Args:
        label: (B, H, W) or (B, 1, H, W) integer labels.

    Returns:
        (B, H // scale_factor, W // scale_factor) int64 labels.
    """
    if label.dim() == 4:
        if label.shape[1] != 1:
            raise ValueError('label must be (B, H, W) or (B, 1, H, W), got '
                             f'{tuple(label.shape)}')
        label = label[:, 0]
    if scale_factor < 1:
        raise ValueError(f'scale_factor must be >= 1, got {scale_factor}')
    void = num_classes
    lbl = label.long().clone()
    lbl[lbl == ignore_index] = void
    one_hot = F.one_hot(lbl, num_classes=num_classes + 1)
    one_hot = one_hot.permute(0, 3, 1, 2).float()
    ratio = F.avg_pool2d(one_hot, kernel_size=scale_factor)
    best_ratio, out = ratio.max(dim=1)
    out[out == void] = ignore_index
    out[best_ratio < min_ratio] = ignore_index
    return out


def strong_augment_seeds(
        rngs: Sequence[np.random.RandomState]) -> List[tuple]:
    """Per image (torch seed of the jitter, blur sigma ∈ U(0.15, 1.15)),
    drawn in this fixed order whether or not jitter/blur are applied, so the
    stream never depends on the iteration's decisions."""
    return [(int(rng.randint(0, 2**31 - 1)), float(rng.uniform(0.15, 1.15)))
            for rng in rngs]
