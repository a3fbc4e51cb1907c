"""Decode heads (registered into mmseg's ``MODELS``)."""
from .dlv2_head import DLV2Head

__all__ = ['DLV2Head']
