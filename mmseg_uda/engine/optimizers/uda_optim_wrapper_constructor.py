"""Optimizer wrappers for UDA: the segmentor's optimizer and, when a method
trains discriminators, a second one (``OptimWrapperDict``)."""
import copy
from typing import Dict, List, Optional

from mmengine.optim import (DefaultOptimWrapperConstructor, OptimWrapper,
                            OptimWrapperDict)
from mmseg.registry import OPTIM_WRAPPERS, OPTIMIZERS
from torch import nn

from mmseg_uda.registry import OPTIM_WRAPPER_CONSTRUCTORS
from ..precision import amp_optim_wrapper_cfg


def _merge_groups(groups: List[dict]) -> List[dict]:
    """Merge per-parameter groups with identical options (fewer groups, same
    optimisation)."""
    merged: Dict[tuple, dict] = {}
    for group in groups:
        options = tuple(sorted(
            (k, v) for k, v in group.items() if k != 'params'))
        merged.setdefault(options, dict(options, params=[]))
        merged[options]['params'].extend(group['params'])
    return list(merged.values())


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class UDAOptimWrapperConstructor:
    """Build the optimizer wrapper(s) of a ``UDASegmentor``.

    Two forms::

        # one optimizer (source only, PLCA, self-training, T2S)
        optim_wrapper = dict(constructor='UDAOptimWrapperConstructor',
                             optimizer=dict(type='SGD', lr=2.5e-4),
                             paramwise_cfg=dict(custom_keys=...))
        # segmentor + discriminator optimizers (AdaptSegNet, AdvEnt, CDGA)
        optim_wrapper = dict(constructor='UDAOptimWrapperConstructor',
                             segmentor=dict(optimizer=..., paramwise_cfg=...),
                             discriminator=dict(optimizer=dict(type='Adam')))

    Mixed precision: ``type='AmpOptimWrapper'`` (float16, loss scaling) or
    ``type='AmpOptimWrapper', dtype='bfloat16'``, which is built as
    ``BF16AmpOptimWrapper`` (bfloat16 autocast, no loss scaler), in either
    form and on each entry (``tools/train.py --amp [--amp-dtype bfloat16]``
    sets them all).

    ``segmentor`` gets every trainable parameter except the methods'
    discriminators, the EMA teacher and frozen copies; ``discriminator`` gets
    the discriminators. ``paramwise_cfg`` works as in mmengine (keys match
    parameter names inside the UDASegmentor, e.g. ``student.decode_head``).
    """

    def __init__(self, optim_wrapper_cfg: dict,
                 paramwise_cfg: Optional[dict] = None):
        cfg = copy.deepcopy(dict(optim_wrapper_cfg))
        if 'optimizer' in cfg:
            if paramwise_cfg is not None:
                cfg['paramwise_cfg'] = paramwise_cfg
            self.cfgs = {'segmentor': cfg}
            self.single = True
        else:
            unknown = set(cfg) - {'segmentor', 'discriminator'}
            if unknown or 'segmentor' not in cfg:
                raise KeyError(
                    'UDAOptimWrapperConstructor takes either an `optimizer` '
                    "or the entries 'segmentor' and 'discriminator'; got "
                    f'{sorted(cfg)}.')
            self.cfgs = cfg
            self.single = False

    def _build(self, cfg: dict, model: nn.Module, keep) -> OptimWrapper:
        cfg = copy.deepcopy(dict(cfg))
        paramwise = cfg.pop('paramwise_cfg', None)
        cfg.setdefault('type', 'OptimWrapper')
        # AmpOptimWrapper(dtype='bfloat16') -> BF16AmpOptimWrapper (no scaler)
        cfg = amp_optim_wrapper_cfg(cfg)
        ctor = DefaultOptimWrapperConstructor(cfg, paramwise)
        groups: List[dict] = []
        ctor.add_params(groups, model)
        groups = [
            g for g in groups
            if g['params'][0].requires_grad and keep(g['params'][0])
        ]
        optimizer = OPTIMIZERS.build(
            dict(ctor.optimizer_cfg, params=_merge_groups(groups)))
        return OPTIM_WRAPPERS.build(
            ctor.optim_wrapper_cfg, default_args=dict(optimizer=optimizer))

    def __call__(self, model: nn.Module):
        if hasattr(model, 'module'):
            model = model.module
        disc = {
            id(p)
            for m in model.discriminator_modules() for p in m.parameters()
        }
        frozen = {
            id(p)
            for m in model.frozen_modules() for p in m.parameters()
        }
        if disc and (self.single or 'discriminator' not in self.cfgs):
            raise KeyError(
                'A UDA method trains a discriminator: optim_wrapper needs a '
                "'discriminator' entry next to 'segmentor'.")
        seg = self._build(self.cfgs['segmentor'], model,
                          lambda p: id(p) not in (disc | frozen))
        if self.single:
            return seg
        wrappers = dict(segmentor=seg)
        if 'discriminator' in self.cfgs:
            if not disc:
                raise KeyError(
                    "optim_wrapper has a 'discriminator' entry but no method "
                    'has a discriminator.')
            wrappers['discriminator'] = self._build(
                self.cfgs['discriminator'], model, lambda p: id(p) in disc)
        return OptimWrapperDict(**wrappers)
