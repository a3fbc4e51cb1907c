from .adversarial import AdaptSegNet, AdvEnt, domain_bce, self_information_map
from .base import BaseUDAMethod
from .cdga import CDGA
from .context import UDAContext
from .mic import MaskedImageConsistency
from .plca import PLCA
from .self_training import SelfTraining, teacher_pseudo_labels
from .t2s import T2S, class_weights_from_performance, downsample_labels

__all__ = [
    'AdaptSegNet', 'AdvEnt', 'BaseUDAMethod', 'CDGA', 'PLCA', 'SelfTraining',
    'T2S', 'MaskedImageConsistency',
    'UDAContext', 'class_weights_from_performance', 'domain_bce',
    'downsample_labels', 'self_information_map', 'teacher_pseudo_labels'
]
