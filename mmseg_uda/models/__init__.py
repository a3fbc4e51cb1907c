from . import decode_heads, losses, modules, segmentors, uda  # noqa: F401
from .data_preprocessor import UDADataPreProcessor
from .segmentors import UDASegmentor

__all__ = ['UDADataPreProcessor', 'UDASegmentor']
