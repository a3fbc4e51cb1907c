"""Decode heads (registered into mmseg's ``MODELS``)."""
from .daformer_head import DAFormerHead
from .dlv2_head import DLV2Head
from .hrda_head import HRDAHead
from .vit_upsample_head import ViTUpsampleHead

__all__ = ['DAFormerHead', 'DLV2Head', 'HRDAHead', 'ViTUpsampleHead']
