"""Block masks of MIC, masked image consistency (Hoyer et al., CVPR 2023,
Sec. 3.2: the masked image x^M = M ⊙ x with a patch mask M of b×b blocks,
each kept with probability 1 − r).

Reference behaviour (read, not copied): ``lhoyer/MIC`` @ 2f932a9,
``seg/mmseg/models/utils/masking_transforms.py::BlockMaskGenerator``:

* the grid has ``round(H / b) × round(W / b)`` cells (Python's ``round``,
  so 4.5 → 4 and 9.5 → 10);
* a cell is kept where ``U(0, 1) > mask_ratio`` (one draw per cell and
  image, shared by the three channels);
* the grid is resized to ``H × W`` with nearest interpolation (PyTorch's
  legacy ``'nearest'``, source index ⌊i·h/H⌋), so sizes that are not
  multiples of b give blocks of unequal size exactly as the official code;
* the mask multiplies the *normalised* image: masked pixels become 0, the
  dataset mean colour.

The official code draws the whole batch's cells with one ``torch.rand``
from the global generator. Here each image draws its cells from its own
``torch.Generator`` (seeded from the sample's global index by the caller),
so a sample's mask does not depend on the batch split across processes;
passing one generator for every image reproduces the official batch draw.
"""
from numbers import Real
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def block_grid_shape(height: int, width: int,
                     block_size: int) -> Tuple[int, int]:
    """Cells of the block grid: ``(round(H / b), round(W / b))``."""
    grid = (round(height / block_size), round(width / block_size))
    if min(grid) < 1:
        raise ValueError(
            f'mask_generator.mask_block_size={block_size} gives an empty '
            f'mask grid {grid} for a {height}x{width} image (round(H / b) '
            'must be >= 1); use a block size at most twice the smaller '
            'image side.')
    return grid


class BlockMaskGenerator:
    """MIC's random block mask (``mask_generator=dict(type='block', ...)``).

    Args:
        mask_ratio (float): r, the probability that a block is masked; in
            [0, 1). MIC: 0.7.
        mask_block_size (int): b, the block side in input pixels. MIC: 64 at
            HRDA's 1024 crops, 32 at DAFormer's 512 crops.
    """

    def __init__(self, mask_ratio: float, mask_block_size: int):
        if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, Real) \
                or not 0.0 <= float(mask_ratio) < 1.0:
            raise ValueError(
                'mask_generator.mask_ratio must be a number in [0, 1) (the '
                f'fraction of masked blocks; MIC 0.7), got {mask_ratio!r}.')
        if isinstance(mask_block_size, bool) or \
                not isinstance(mask_block_size, int) or mask_block_size < 1:
            raise ValueError(
                'mask_generator.mask_block_size must be a positive integer '
                f'(block side in pixels; MIC 64 or 32), got '
                f'{mask_block_size!r}.')
        self.mask_ratio = float(mask_ratio)
        self.mask_block_size = mask_block_size

    @classmethod
    def build(cls, cfg: dict) -> 'BlockMaskGenerator':
        """From ``dict(type='block', mask_ratio=..., mask_block_size=...)``
        (the official config format)."""
        if not isinstance(cfg, dict):
            raise TypeError('mask_generator must be a dict like '
                            "dict(type='block', mask_ratio=0.7, "
                            f'mask_block_size=64), got {cfg!r}.')
        cfg = dict(cfg)
        kind = cfg.pop('type', None)
        if kind != 'block':
            raise ValueError(
                f"mask_generator.type must be 'block' (MIC's only mask), got "
                f'{kind!r}.')
        missing = {'mask_ratio', 'mask_block_size'} - set(cfg)
        unknown = set(cfg) - {'mask_ratio', 'mask_block_size'}
        if missing or unknown:
            raise ValueError(
                'mask_generator needs exactly the keys mask_ratio and '
                f'mask_block_size; missing {sorted(missing)}, unknown '
                f'{sorted(unknown)}.')
        return cls(**cfg)

    @torch.no_grad()
    def generate_mask(self, shape: Sequence[int],
                      generators: Sequence[Optional[torch.Generator]],
                      device=None) -> Tensor:
        """Keep-masks (B, 1, H, W), float 0/1.

        Args:
            shape: the image batch shape (B, C, H, W).
            generators: one CPU ``torch.Generator`` per image (the same
                object may repeat: it is drawn from in image order); None
                entries draw from the global generator.
            device: device of the returned mask.
        """
        b, _, h, w = shape
        if len(generators) != b:
            raise ValueError(f'{len(generators)} generators for {b} images')
        gh, gw = block_grid_shape(h, w, self.mask_block_size)
        cells = torch.cat([
            torch.rand((1, 1, gh, gw), generator=g) for g in generators
        ])
        keep = (cells > self.mask_ratio).float()
        keep = F.interpolate(keep, size=(h, w), mode='nearest')
        return keep.to(device) if device is not None else keep

    @torch.no_grad()
    def mask_image(self, img: Tensor,
                   generators: Sequence[Optional[torch.Generator]]
                   ) -> Tuple[Tensor, Tensor]:
        """``img · mask`` on the normalised image, and the mask."""
        mask = self.generate_mask(img.shape, generators, img.device)
        return img * mask.to(img.dtype), mask
