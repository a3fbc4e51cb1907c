from .hrda_encoder_decoder import HRDAEncoderDecoder
from .uda_segmentor import UDASegmentor, registered_uda_methods

__all__ = ['HRDAEncoderDecoder', 'UDASegmentor', 'registered_uda_methods']
