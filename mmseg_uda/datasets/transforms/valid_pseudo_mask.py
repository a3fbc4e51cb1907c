"""Pseudo-label margins as a data-pipeline mask (HRDA's
``crop_pseudo_margins``, "v2").

Reference behaviour (read, not copied): ``lhoyer/HRDA`` at commit
``c370b5b0fe3c6238993435819f9a8f1518c413b5``,
``mmseg/datasets/cityscapes.py::CityscapesDataset.pre_pipeline``: before
loading, a mask of ones gets zero margins (top, bottom, left, right) and is
appended to ``seg_fields``, so it is resized (nearest), cropped and flipped
like a label and collected as ``valid_pseudo_mask``; DACS multiplies the
pseudo-weight by it.

mmcv 2.x's ``Resize``, ``RandomFlip`` and ``Pad`` transform ``gt_seg_map``
only (mmseg's ``RandomCrop`` iterates ``seg_fields``). The target pipeline of
``UDADataset`` never loads labels, so the mask travels as the target's
``gt_seg_map`` through the geometric transforms and
:class:`PackSegInputsWithValidMask` moves it to the data sample's
``valid_pseudo_mask`` (padding, 255, becomes 0: no pseudo-label there).
"""
from typing import Sequence, Tuple, Union

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.structures import PixelData
from mmseg.datasets.transforms import PackSegInputs

from mmseg_uda.registry import TRANSFORMS

_CARRIER_FLAG = 'valid_pseudo_mask_as_gt_seg_map'


@TRANSFORMS.register_module()
class GenerateValidPseudoMask(BaseTransform):
    """Start a valid-pseudo-label mask: 1 everywhere, 0 on the margins.

    Place it right after ``LoadImageFromFile`` of a *target* pipeline
    (before ``Resize``/``RandomCrop``/``RandomFlip``/``Pad``), and end the
    pipeline with :class:`PackSegInputsWithValidMask`. The target
    ``RandomCrop`` must not use ``cat_max_ratio`` (it would read the mask as
    a label; HRDA's target crop has none).

    Args:
        margins (Sequence[int]): rows/columns set to 0 (top, bottom, left,
            right) at the loaded image's resolution. HRDA Cityscapes:
            (30, 240, 30, 30).
        size (str | Sequence[int]): ``'image'`` (the loaded image's size), or
            the (h, w) the margins were defined for; it must then equal the
            loaded image (HRDA hard-codes 1024×2048, Cityscapes' size).
    """

    def __init__(self,
                 margins: Sequence[int] = (30, 240, 30, 30),
                 size: Union[str, Sequence[int]] = 'image'):
        margins = tuple(int(m) for m in margins)
        if len(margins) != 4 or min(margins) < 0:
            raise ValueError(
                'GenerateValidPseudoMask: margins must be four non-negative '
                f'ints (top, bottom, left, right), got {margins}')
        if size != 'image' and (len(size) != 2 or min(size) <= 0):
            raise ValueError("GenerateValidPseudoMask: size must be 'image' "
                             f'or (h, w), got {size!r}')
        self.margins = margins
        self.size = size if size == 'image' else tuple(int(s) for s in size)

    @staticmethod
    def margin_mask(shape: Tuple[int, int],
                    margins: Sequence[int]) -> np.ndarray:
        """(h, w) uint8 mask, 1 inside, 0 on the (top, bottom, left, right)
        margins."""
        h, w = shape
        top, bottom, left, right = margins
        mask = np.ones((h, w), dtype=np.uint8)
        mask[:top, :] = 0
        mask[h - bottom:, :] = 0
        mask[:, :left] = 0
        mask[:, w - right:] = 0
        return mask

    def transform(self, results: dict) -> dict:
        if results.get('gt_seg_map', None) is not None:
            raise ValueError(
                'GenerateValidPseudoMask: the pipeline already loaded a label '
                '(gt_seg_map); the valid-pseudo mask is for target pipelines, '
                'which load no labels. Remove LoadAnnotations.')
        shape = tuple(results['img'].shape[:2])
        if self.size != 'image' and self.size != shape:
            raise ValueError(
                f'GenerateValidPseudoMask: size {self.size} differs from the '
                f'loaded image {shape} ({results.get("img_path")}); use '
                "size='image' or the dataset's image size.")
        results['gt_seg_map'] = self.margin_mask(shape, self.margins)
        seg_fields = results.setdefault('seg_fields', [])
        if 'gt_seg_map' not in seg_fields:
            seg_fields.append('gt_seg_map')
        results[_CARRIER_FLAG] = True
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(margins={self.margins}, '
                f'size={self.size!r})')


@TRANSFORMS.register_module()
class PackSegInputsWithValidMask(PackSegInputs):
    """mmseg's ``PackSegInputs`` that also packs the mask started by
    :class:`GenerateValidPseudoMask` as ``data_sample.valid_pseudo_mask``
    (``PixelData``, (1, H, W) uint8; padded pixels → 0). Without that
    transform upstream it is plain ``PackSegInputs``."""

    def transform(self, results: dict) -> dict:
        mask = None
        if results.pop(_CARRIER_FLAG, False):
            mask = np.asarray(results.pop('gt_seg_map')).copy()
            mask[mask != 1] = 0  # padding (seg_pad_val 255) -> invalid
            results['seg_fields'] = [
                f for f in results.get('seg_fields', []) if f != 'gt_seg_map'
            ]
        packed = super().transform(results)
        if mask is not None:
            packed['data_samples'].set_data(
                dict(valid_pseudo_mask=PixelData(
                    data=torch.from_numpy(mask[None].astype(np.uint8)))))
        return packed
