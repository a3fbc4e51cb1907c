"""Token masks for masked image consistency on ViT students (VFM-UDA,
Englert et al., CVPRW 2024: MIC's masking done on the ViT's patch tokens).

Reference behaviour (read, not copied): ``tue-mps/vfm-uda`` @ e154d8f,
``models/token_masking.py::TokenMasking`` and its use in
``models/vit_variants/vit_lightweight_head.py::VITLightweightHead.
forward_features``:

* after the patch embedding, each of the L = Hp·Wp patch tokens of each
  image is replaced by the encoder's learned ``mask_token`` where
  ``mask_ratio > U(0, 1)`` (one draw per token and image; strict ``>``), i.e.
  independently with probability r: the number of masked tokens is
  Binomial(L, r), not a fixed count;
* this happens before the position embedding is added, so a masked token
  still carries its position;
* the draws are ``torch.rand((B, L))``, token order row-major over the
  (Hp, Wp) grid (the flattening of the patch embedding's output).

The official code draws the batch from the global torch generator. Here
each image draws from its own ``torch.Generator`` (seeded from the sample's
global index by the caller), so a sample's mask does not depend on how the
batch is split across processes; one generator passed for every image
reproduces the official batch draw bit for bit.

The mask reaches the student through the backbone's token-mask API:
``supports_token_mask = True``, ``token_grid(h, w) -> (Hp, Wp)`` and
``set_token_mask(mask)`` (a (B, Hp, Wp) bool tensor consumed by the next
forward; ``DINOv2VisionTransformer`` implements it).
"""
from contextlib import contextmanager
from numbers import Real
from typing import Iterator, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn


class TokenMaskGenerator:
    """VFM-UDA's random token mask (``mask_generator=dict(type='token',
    mask_ratio=r)`` of ``MaskedImageConsistency``).

    Args:
        mask_ratio (float): r, the probability that a patch token is
            replaced by the mask token; in [0, 1). VFM-UDA 0.7
            (``uda_vit_vanilla.yaml``: ``token_mask_ratio: 0.7``).
    """

    mask_type = 'token'

    def __init__(self, mask_ratio: float):
        if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, Real) \
                or not 0.0 <= float(mask_ratio) < 1.0:
            raise ValueError(
                'mask_generator.mask_ratio must be a number in [0, 1) (the '
                'probability that a ViT patch token is masked; VFM-UDA 0.7), '
                f'got {mask_ratio!r}.')
        self.mask_ratio = float(mask_ratio)

    @classmethod
    def build(cls, cfg: dict) -> 'TokenMaskGenerator':
        """From ``dict(type='token', mask_ratio=...)``."""
        cfg = dict(cfg)
        kind = cfg.pop('type', None)
        if kind != 'token':
            raise ValueError(
                f"TokenMaskGenerator needs mask_generator.type='token', got "
                f'{kind!r}.')
        if set(cfg) != {'mask_ratio'}:
            raise ValueError(
                "mask_generator=dict(type='token', ...) takes exactly the key "
                f'mask_ratio; got {sorted(cfg)}.')
        return cls(**cfg)

    @torch.no_grad()
    def generate_mask(self, grid: Tuple[int, int],
                      generators: Sequence[Optional[torch.Generator]],
                      device=None) -> Tensor:
        """Token masks (B, Hp, Wp), bool, True = replaced by the mask token.

        Args:
            grid: (Hp, Wp), the backbone's token grid for the input size.
            generators: one CPU ``torch.Generator`` per image (the same
                object may repeat: it is drawn from in image order); None
                entries draw from the global generator.
            device: device of the returned mask.
        """
        hp, wp = (int(s) for s in grid)
        if hp < 1 or wp < 1:
            raise ValueError(f'empty token grid {grid}')
        draws = torch.cat([
            torch.rand((1, hp * wp), generator=g) for g in generators
        ])
        mask = (self.mask_ratio > draws).reshape(len(generators), hp, wp)
        return mask.to(device) if device is not None else mask


def token_maskable_backbone(segmentor: nn.Module,
                            owner: str = 'MaskedImageConsistency'
                            ) -> nn.Module:
    """The student's backbone if it takes token masks, else a ValueError
    that names the mask type, the backbone and what to use instead.

    Token masks need one backbone forward on the masked images: an HRDA
    student (a segmentor with its own multi-resolution ``uda_train_forward``)
    runs its backbone on several crops and scales of each image, so it is
    refused as well."""
    backbone = getattr(segmentor, 'backbone', None)
    backbone_type = type(backbone).__name__
    if getattr(segmentor, 'uda_train_forward', None) is not None:
        raise ValueError(
            f"{owner}: mask_generator type='token' (token masking) needs a "
            'plain EncoderDecoder student whose backbone sees the masked '
            f'image once; {type(segmentor).__name__} (backbone '
            f'{backbone_type}) runs the backbone on several crops/scales. '
            "Use mask_generator=dict(type='block', ...) with HRDA.")
    if backbone is None or not getattr(backbone, 'supports_token_mask',
                                       False):
        raise ValueError(
            f"{owner}: mask_generator type='token' (token masking) needs a "
            'ViT backbone with supports_token_mask = True, token_grid() and '
            "set_token_mask() (e.g. type='DINOv2VisionTransformer'); the "
            f'student backbone is {backbone_type}. Use '
            "mask_generator=dict(type='block', mask_ratio=..., "
            'mask_block_size=...) for other backbones.')
    for name in ('token_grid', 'set_token_mask'):
        if not callable(getattr(backbone, name, None)):
            raise ValueError(
                f'{owner}: {backbone_type} sets supports_token_mask but has '
                f'no {name}() method.')
    return backbone


@contextmanager
def token_masked(backbone: nn.Module, mask: Tensor) -> Iterator[None]:
    """Hand ``mask`` (B, Hp, Wp) bool to ``backbone`` for the next forward
    run inside the block, and clear it on exit, so a mask can never reach a
    later forward (e.g. if the block raised before the backbone ran)."""
    backbone.set_token_mask(mask)
    try:
        yield
    finally:
        backbone.set_token_mask(None)
