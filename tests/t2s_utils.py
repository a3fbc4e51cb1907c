"""Shared helpers of the T2S tests: a T2S config sized for the tiny
model of ``uda_utils`` and model/context builders."""
import copy

import torch
from mmengine.config import ConfigDict
from mmengine.logging import MessageHub

import mmseg_uda.models.uda.t2s  # noqa: F401  (registers T2S & co.)
from mmseg_uda.engine.optimizers import UDAOptimWrapperConstructor
from mmseg_uda.models.uda import UDAContext
from mmseg_uda.registry import MODELS
from uda_utils import uda_model_cfg

SGD = dict(optimizer=dict(type='SGD', lr=0.5, momentum=0.9))


def t2s_cfg(**kwargs):
    """T2S sized for the tiny test model (decode feature: 8 channels)."""
    cfg = dict(
        type='T2S',
        num_classes=4,
        projection_head=dict(
            type='ProjectionHead',
            in_channels=8,
            hidden_channels=16,
            out_channels=8,
            norm_cfg=None),
        num_queries=16,
        num_negatives=8,
        queue_length=32,
        enqueue_per_class=8,
        style=dict(type='FDAStyleTransfer', beta=0.05))
    cfg.update(kwargs)
    return cfg


def set_iter(it):
    MessageHub.get_current_instance().update_info('iter', it)


def build(methods, seed=0, state=None):
    torch.manual_seed(seed)
    model = MODELS.build(ConfigDict(uda_model_cfg(methods)))
    model.init_weights()
    if model.teacher is not None:
        # what EMATeacherHook.before_train does
        model.teacher.load_state_dict(model.student.state_dict())
        model.teacher_initialized.fill_(1)
    if state is not None:
        model.load_state_dict(state)
    return model


def optim(model, cfg=SGD):
    return UDAOptimWrapperConstructor(copy.deepcopy(cfg))(model)


def context(model, batch, it=0):
    data = model.data_preprocessor(batch, True)
    ctx = UDAContext(model, data['inputs'], data['data_samples'], it)
    model._forward_student_domains(ctx, model._student_domains())
    return ctx
