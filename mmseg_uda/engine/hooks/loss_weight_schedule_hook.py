"""Iteration-dependent loss weights (warm-ups) for UDA losses."""
import math

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmseg_uda.registry import HOOKS


def schedule_factor(schedule: dict, it: int) -> float:
    """Factor of a loss at iteration ``it`` (0-based).

    Kinds:
        ``linear``: ``start_factor`` at ``begin`` rising linearly to
            ``end_factor`` at ``end`` (constant outside).
        ``step``: ``start_factor`` before ``begin``, ``end_factor`` from
            ``begin`` on (e.g. a source-only warm-up before a method starts).
        ``sigmoid_rampup``: exp(−5(1−x)²) with x = (it − begin)/(end − begin)
            clipped to [0, 1] (mean-teacher consistency ramp-up), scaled
            between the two factors.
    """
    kind = schedule.get('type', 'linear')
    begin = schedule.get('begin', 0)
    end = schedule.get('end', begin)
    lo = schedule.get('start_factor', 0.0)
    hi = schedule.get('end_factor', 1.0)
    if kind == 'step':
        return lo if it < begin else hi
    if end <= begin:
        x = 1.0 if it >= begin else 0.0
    else:
        x = min(max((it - begin) / (end - begin), 0.0), 1.0)
    if kind == 'linear':
        return lo + (hi - lo) * x
    if kind == 'sigmoid_rampup':
        return lo + (hi - lo) * math.exp(-5.0 * (1.0 - x)**2)
    raise ValueError(f'Unknown loss-weight schedule type {kind!r}; use '
                     "'linear', 'step' or 'sigmoid_rampup'.")


@HOOKS.register_module()
class LossWeightScheduleHook(Hook):
    """Scale UDA losses by an iteration-dependent factor.

    ``schedules`` maps loss-key patterns (``fnmatch``, matched against the
    logged names, e.g. ``'cdga.*'`` or ``'t2s.loss_t2s'``) to a schedule
    (see :func:`schedule_factor`). The factor is a pure function of the
    iteration, so a resumed run continues exactly. Factors are logged as
    ``weight/<pattern>``. Example, a 1.5k-iteration linear warm-up::

        custom_hooks = [dict(type='LossWeightScheduleHook', schedules={
            't2s.loss_t2s': dict(type='linear', begin=0, end=1500)})]

    Args:
        schedules (dict): loss-key pattern -> schedule.
        strict (bool): a pattern that matches no loss key at the first
            iteration stops training with an error naming the pattern and
            the loss keys that exist (a typo would otherwise scale nothing).
            The methods of this package return the same loss keys at every
            iteration, so the first iteration sees them all; set False only
            for a custom method that adds a loss from a later iteration.
    """
    priority = 'ABOVE_NORMAL'

    def __init__(self, schedules: dict, strict: bool = True):
        self.schedules = dict(schedules)
        self.strict = bool(strict)
        for pattern, schedule in self.schedules.items():
            if not isinstance(pattern, str) or not pattern:
                raise TypeError('LossWeightScheduleHook.schedules keys must '
                                f'be loss-key patterns, got {pattern!r}')
            schedule_factor(schedule, 0)  # validate early

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        factors = {
            pattern: schedule_factor(schedule, runner.iter)
            for pattern, schedule in self.schedules.items()
        }
        model.loss_scales = factors
        model.loss_scales_strict = self.strict
        for pattern, factor in factors.items():
            runner.message_hub.update_scalar(f'train/weight/{pattern}',
                                             factor)
