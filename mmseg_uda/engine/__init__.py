from . import hooks, optimizers, precision  # noqa: F401
from .model_wrappers import UDADistributedDataParallel

__all__ = ['UDADistributedDataParallel']
