"""Registries used by mmseg-uda.

Components are registered straight into MMSegmentation's registries (scope
``mmseg``), so a config with ``default_scope='mmseg'`` finds them next to
mmseg's own backbones, heads and datasets. Model wrappers go into mmengine's
root registry because ``Runner.wrap_model`` looks them up there without a
scope.
"""
from mmengine.registry import MODEL_WRAPPERS as ROOT_MODEL_WRAPPERS
from mmseg.registry import (DATA_SAMPLERS, DATASETS, HOOKS, METRICS, MODELS,
                            OPTIM_WRAPPER_CONSTRUCTORS, PARAM_SCHEDULERS,
                            TRANSFORMS, VISBACKENDS)

__all__ = [
    'DATA_SAMPLERS', 'DATASETS', 'HOOKS', 'METRICS', 'MODELS',
    'OPTIM_WRAPPER_CONSTRUCTORS', 'PARAM_SCHEDULERS', 'ROOT_MODEL_WRAPPERS',
    'TRANSFORMS', 'VISBACKENDS'
]
