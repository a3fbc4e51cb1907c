from . import hooks, optimizers  # noqa: F401
from .model_wrappers import UDADistributedDataParallel

__all__ = ['UDADistributedDataParallel']
