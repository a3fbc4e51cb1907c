from . import (backbones, decode_heads, losses, modules,  # noqa: F401
               segmentors, uda)
from .data_preprocessor import UDADataPreProcessor
from .segmentors import UDASegmentor

__all__ = ['UDADataPreProcessor', 'UDASegmentor']
