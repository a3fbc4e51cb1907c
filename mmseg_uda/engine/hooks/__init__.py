from .debug_visualization_hook import (UDADebugVisualizationHook, colorize,
                                       compose_debug_grid)
from .ema_teacher_hook import EMATeacherHook, ema_momentum, ema_update
from .loss_weight_schedule_hook import LossWeightScheduleHook, schedule_factor

__all__ = [
    'EMATeacherHook', 'LossWeightScheduleHook', 'UDADebugVisualizationHook',
    'colorize', 'compose_debug_grid', 'ema_momentum', 'ema_update',
    'schedule_factor'
]
