from .adversarial import AdaptSegNet, AdvEnt, domain_bce, self_information_map
from .base import BaseUDAMethod
from .context import UDAContext

__all__ = [
    'AdaptSegNet', 'AdvEnt', 'BaseUDAMethod', 'UDAContext', 'domain_bce',
    'self_information_map'
]
