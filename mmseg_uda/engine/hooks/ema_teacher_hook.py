"""Mean-teacher update of ``UDASegmentor.teacher``."""
from typing import Optional

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmseg_uda.registry import HOOKS


def ema_momentum(step: int, alpha: float) -> float:
    """DAFormer/DACS teacher momentum a = min(1 − 1/(t+1), α) for the update
    after the student's t-th optimizer step (``dacs.py::_update_ema``): the
    teacher starts as the plain average of the first student states."""
    return min(1.0 - 1.0 / (step + 1), alpha)


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module,
               momentum: float, ema_buffers: bool = False,
               trainable_only: bool = False) -> None:
    """θ_t ← a·θ_t + (1 − a)·θ_s for parameters (and float buffers when
    ``ema_buffers``; integer buffers are then copied).

    ``trainable_only`` skips the parameters the student does not train
    (``requires_grad=False``, e.g. a ``freeze_backbone=True`` encoder):
    they stay as copied at initialisation, equal to the student's, and are
    not read at all (a·θ + (1 − a)·θ can also round away from θ).

    Computed in float32 at least, whatever the autocast state: (1 − a) =
    1e-3 is below bfloat16's resolution, so a 16-bit teacher parameter is
    averaged in float32 and rounded once."""
    # imported here: mmseg_uda.models imports this module (circular)
    from mmseg_uda.models.utils.precision import autocast_disabled
    with autocast_disabled():
        for t, s in zip(teacher.parameters(), student.parameters()):
            if s.requires_grad or not trainable_only:
                _ema_(t, s.detach(), momentum)
        if ema_buffers:
            for t, s in zip(teacher.buffers(), student.buffers()):
                if t.dtype.is_floating_point:
                    _ema_(t, s, momentum)
                else:
                    t.copy_(s)


def _ema_(t: torch.Tensor, s: torch.Tensor, momentum: float) -> None:
    if t.dtype in (torch.float16, torch.bfloat16):
        t.copy_(t.float().mul_(momentum).add_(s.float(),
                                              alpha=1.0 - momentum))
    else:
        t.mul_(momentum).add_(s.to(t.dtype), alpha=1.0 - momentum)


@HOOKS.register_module()
class EMATeacherHook(Hook):
    """Keep ``model.teacher`` an exponential moving average of the student.

    The teacher is a sub-module of ``UDASegmentor``, so checkpoints carry it
    and ``--resume`` restores it. This hook copies the student into the
    teacher once, before the first iteration of a fresh run (flagged by the
    checkpointed buffer ``teacher_initialized``, so a resumed run is never
    re-initialised), then after every iteration applies
    θ_t ← a·θ_t + (1 − a)·θ_s with a = min(1 − 1/(t+1), α) where t is the
    number of student updates so far (lhoyer/DAFormer
    ``mmseg/models/uda/dacs.py``).

    Args:
        alpha (float): final EMA momentum α (DAFormer 0.999, DACS 0.99).
        ema_buffers (bool): also average float buffers (BN running stats).
            DAFormer averages parameters only; the teacher keeps its own
            buffers (mmdet's MeanTeacherHook ``skip_buffer=True``).
    """
    priority = 'ABOVE_NORMAL'

    def __init__(self, alpha: float = 0.999, ema_buffers: bool = False):
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f'alpha must be in [0, 1), got {alpha}')
        self.alpha = alpha
        self.ema_buffers = ema_buffers

    @staticmethod
    def _model(runner):
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        if getattr(model, 'teacher', None) is None:
            raise RuntimeError(
                'EMATeacherHook is configured but the model has no teacher: '
                'no UDA method in model.methods needs one. Remove the hook.')
        return model

    def before_train(self, runner) -> None:
        model = self._model(runner)
        if not int(model.teacher_initialized):
            with torch.no_grad():
                model.teacher.load_state_dict(model.student.state_dict())
            model.teacher_initialized.fill_(1)
            runner.logger.info('EMATeacherHook: teacher initialised from '
                               'the student.')

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        model = self._model(runner)
        momentum = ema_momentum(runner.iter + 1, self.alpha)
        ema_update(model.teacher, model.student, momentum, self.ema_buffers,
                   trainable_only=True)
        runner.message_hub.update_scalar('train/ema_momentum', momentum)
