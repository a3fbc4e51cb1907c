"""UDA runner hooks: EMA teacher, loss-weight schedules, debug pictures."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.logging import MessageHub, MMLogger

from mmseg_uda.engine.hooks import (EMATeacherHook, LossWeightScheduleHook,
                                    UDADebugVisualizationHook,
                                    compose_debug_grid, ema_momentum,
                                    schedule_factor)
from mmseg_uda.models.uda import BaseUDAMethod
from mmseg_uda.registry import MODELS
from uda_utils import random_uda_batch, uda_model_cfg


class TeacherUser(BaseUDAMethod):
    """Minimal method that asks for a teacher."""
    requires_teacher = True

    def loss(self, ctx):
        return {}


MODELS.register_module(module=TeacherUser, force=True)


def teacher_model():
    model = MODELS.build(ConfigDict(uda_model_cfg([dict(type='TeacherUser')])))
    model.init_weights()
    return model


def fake_runner(model, it=0, tmp_path=None):
    return SimpleNamespace(
        model=model, iter=it, logger=MMLogger.get_current_instance(),
        message_hub=MessageHub.get_current_instance(),
        work_dir=str(tmp_path) if tmp_path else '.',
        train_dataloader=SimpleNamespace(dataset=SimpleNamespace(metainfo={})),
        visualizer=SimpleNamespace(add_image=lambda *a, **k: None))


def test_ema_momentum_ramp_values():
    # a = min(1 - 1/(t+1), alpha) after the student's t-th update
    assert ema_momentum(1, 0.999) == pytest.approx(0.5)
    assert ema_momentum(2, 0.999) == pytest.approx(2 / 3)
    assert ema_momentum(11, 0.999) == pytest.approx(1 - 1 / 12)
    assert ema_momentum(100000, 0.999) == pytest.approx(0.999)


def test_teacher_initialised_once_and_updated_with_ramp():
    model = teacher_model()
    hook = EMATeacherHook(alpha=0.99)
    # differs from the student before the hook runs (separate random init)
    assert not all(torch.equal(t, s) for t, s in zip(
        model.teacher.parameters(), model.student.parameters()))
    hook.before_train(fake_runner(model))
    assert int(model.teacher_initialized) == 1
    for t, s in zip(model.teacher.parameters(), model.student.parameters()):
        assert torch.equal(t, s)
    teacher0 = [p.clone() for p in model.teacher.parameters()]
    history = []
    for it in (0, 1, 10):  # after iterations 0, 1 and 10
        with torch.no_grad():
            for p in model.student.parameters():
                p.add_(torch.randn_like(p))
        expected = []
        a = min(1 - 1 / (it + 2), 0.99)
        for t, s in zip(model.teacher.parameters(),
                        model.student.parameters()):
            expected.append(a * t.detach().clone() + (1 - a) * s.detach())
        hook.after_train_iter(fake_runner(model, it), it)
        history.append(a)
        for t, e in zip(model.teacher.parameters(), expected):
            assert torch.allclose(t, e, atol=1e-6)
    assert history == pytest.approx([0.5, 2 / 3, 11 / 12])
    assert not torch.equal(teacher0[0], next(model.teacher.parameters()))


def test_resumed_teacher_is_not_reinitialised():
    model = teacher_model()
    hook = EMATeacherHook()
    hook.before_train(fake_runner(model))
    with torch.no_grad():
        for p in model.teacher.parameters():
            p.mul_(0.5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    resumed = teacher_model()
    resumed.load_state_dict(state)
    hook.before_train(fake_runner(resumed, it=7))
    for t, s in zip(resumed.teacher.parameters(), model.teacher.parameters()):
        assert torch.equal(t, s)


def test_teacher_never_initialised_is_an_error():
    model = teacher_model()
    data = model.data_preprocessor(random_uda_batch(), True)
    with pytest.raises(RuntimeError, match='EMATeacherHook'):
        model.loss(data['inputs'], data['data_samples'])


def test_schedule_factors():
    lin = dict(type='linear', begin=0, end=1500)
    assert schedule_factor(lin, 0) == 0.0
    assert schedule_factor(lin, 750) == pytest.approx(0.5)
    assert schedule_factor(lin, 5000) == 1.0
    step = dict(type='step', begin=5000)
    assert schedule_factor(step, 4999) == 0.0
    assert schedule_factor(step, 5000) == 1.0
    ramp = dict(type='sigmoid_rampup', begin=0, end=100)
    assert schedule_factor(ramp, 0) == pytest.approx(np.exp(-5))
    assert schedule_factor(ramp, 100) == 1.0
    with pytest.raises(ValueError, match='Unknown loss-weight schedule'):
        LossWeightScheduleHook({'x': dict(type='cosine')})


def test_loss_weight_hook_scales_matching_losses():
    model = MODELS.build(ConfigDict(
        uda_model_cfg([dict(type='AdvEnt', num_classes=4)])))
    model.init_weights()
    data = model.data_preprocessor(random_uda_batch(), True)
    ref = model.loss(data['inputs'], data['data_samples'])
    hook = LossWeightScheduleHook(
        {'advent.*': dict(type='linear', begin=0, end=4)})
    hook.before_train_iter(fake_runner(model, it=1), 1)
    scaled = model.loss(data['inputs'], data['data_samples'])
    for key in ('advent.loss_adv', 'advent.loss_D'):
        assert torch.allclose(scaled[key], 0.25 * ref[key])
    assert torch.allclose(scaled['src.loss_ce'], ref['src.loss_ce'])


def advent_model_and_batch():
    model = MODELS.build(ConfigDict(
        uda_model_cfg([dict(type='AdvEnt', num_classes=4)])))
    model.init_weights()
    return model, model.data_preprocessor(random_uda_batch(), True)


def test_loss_weight_pattern_matching_no_loss_is_an_error():
    model, data = advent_model_and_batch()
    # a typo, and a pattern that matches only a logged non-loss key
    for pattern in ('adevnt.*', 'src.acc_seg'):
        model._checked_loss_patterns.clear()
        hook = LossWeightScheduleHook(
            {'advent.loss_D': dict(type='linear', begin=0, end=4),
             pattern: dict(type='linear', begin=0, end=4)})
        hook.before_train_iter(fake_runner(model, it=0), 0)
        with pytest.raises(ValueError) as err:
            model.loss(data['inputs'], data['data_samples'])
        msg = str(err.value)
        assert repr(pattern) in msg
        # the keys that exist are listed, logged non-loss keys are not
        assert "['advent.loss_D', 'advent.loss_adv', 'src.loss_ce']" in msg


def test_loss_weight_pattern_checked_once_and_strict_false_skips():
    model, data = advent_model_and_batch()
    # strict=False: no error, and the unmatched pattern scales nothing
    ref = model.loss(data['inputs'], data['data_samples'])
    hook = LossWeightScheduleHook(
        {'advent.loss_late': dict(type='step', begin=0, start_factor=0.0,
                                  end_factor=0.5)}, strict=False)
    hook.before_train_iter(fake_runner(model, it=0), 0)
    out = model.loss(data['inputs'], data['data_samples'])
    for key, value in ref.items():
        assert torch.allclose(out[key], value), key
    # a pattern that matched when first applied is not checked again (a
    # later iteration may lack the key)
    model.loss_scales_strict = True
    model.loss_scales = {'late.*': 2.0}
    losses = {'late.loss_x': torch.tensor(1.0)}
    model._apply_loss_scales(losses)
    assert losses['late.loss_x'] == 2.0
    model._apply_loss_scales({'src.loss_ce': torch.tensor(1.0)})
    model.loss_scales = {'never.*': 2.0}
    with pytest.raises(ValueError, match="'never.*' .*matches no loss key"):
        model._apply_loss_scales({'src.loss_ce': torch.tensor(1.0)})


def test_loss_weight_typo_stops_the_runner_at_the_first_iteration(tmp_path):
    from e2e_utils import make_tiny_uda_data, tiny_runner_cfg, train
    make_tiny_uda_data(str(tmp_path / 'data'), num_source=2, num_target=2,
                       num_val=1)
    cfg = tiny_runner_cfg(
        str(tmp_path / 'data'), str(tmp_path / 'work'), max_iters=2,
        custom_hooks=[dict(type='LossWeightScheduleHook',
                           schedules={'src.loss_cee': dict(type='step')})])
    cfg.log_level = 'ERROR'
    with pytest.raises(ValueError,
                       match=r"'src.loss_cee' .*\['src.loss_ce'\]"):
        train(cfg)
    assert not (tmp_path / 'work' / 'iter_1.pth').exists()


def test_debug_hook_writes_picture(tmp_path):
    model = MODELS.build(ConfigDict(
        uda_model_cfg([dict(type='AdvEnt', num_classes=4)])))
    model.init_weights()
    hook = UDADebugVisualizationHook(interval=2)
    runner = fake_runner(model, it=1, tmp_path=tmp_path)
    hook.before_train_iter(runner, 1)
    assert model.debug_enabled
    data = model.data_preprocessor(random_uda_batch(h=32, w=48), True)
    model.loss(data['inputs'], data['data_samples'])
    assert set(model.debug_maps) == {
        'source_image', 'source_label', 'source_prediction', 'target_image',
        'target_prediction'
    }
    hook.after_train_iter(runner, 1)
    picture = tmp_path / 'debug' / 'iter_2.png'
    assert picture.exists() and not model.debug_enabled


def test_compose_debug_grid_layout():
    maps = dict(
        image=torch.zeros(3, 3, 20, 40, dtype=torch.uint8),
        label=torch.full((3, 10, 20), 255, dtype=torch.long))
    grid = compose_debug_grid(maps, max_samples=2, tile_height=20)
    # 2 rows of height 20 (+2 px separator each); tiles 40 + 2 + 40 wide
    assert grid.shape == (44, 82, 3) and grid.dtype == np.uint8
    assert grid[17:20, 50:80].max() == 0  # ignore label drawn black (below title)
