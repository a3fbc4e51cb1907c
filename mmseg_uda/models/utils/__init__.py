from .functional import frozen_call
from .normalization import denormalize, renormalize, to_rgb_uint8
from .seg_forward import SegOutputs, decode_head_forward, segmentor_forward
from .style_augmentor import StyleAugmentorStyleTransfer
from .style_transfer import (BaseStyleTransfer, FDAStyleTransfer,
                             LabStyleTransfer, RandomStyleTransfer,
                             fda_source_to_target, lab_to_rgb, rgb_to_lab)
from .weight_conversion import convert_deeplab_resnet, extract_state_dict

__all__ = [
    'BaseStyleTransfer', 'FDAStyleTransfer', 'LabStyleTransfer',
    'RandomStyleTransfer', 'SegOutputs', 'StyleAugmentorStyleTransfer', 'convert_deeplab_resnet',
    'decode_head_forward', 'denormalize', 'extract_state_dict',
    'fda_source_to_target', 'frozen_call', 'lab_to_rgb', 'renormalize',
    'rgb_to_lab', 'segmentor_forward', 'to_rgb_uint8'
]
