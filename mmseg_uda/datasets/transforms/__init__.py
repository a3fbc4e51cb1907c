"""Data transforms (registered into mmseg's ``TRANSFORMS``)."""
from .valid_pseudo_mask import (GenerateValidPseudoMask,
                                PackSegInputsWithValidMask)

__all__ = ['GenerateValidPseudoMask', 'PackSegInputsWithValidMask']
