from .functional import frozen_call
from .normalization import denormalize, renormalize, to_rgb_uint8
from .seg_forward import SegOutputs, decode_head_forward, segmentor_forward

__all__ = [
    'SegOutputs', 'decode_head_forward', 'denormalize', 'frozen_call',
    'renormalize', 'segmentor_forward', 'to_rgb_uint8'
]
