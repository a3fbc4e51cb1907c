"""A NaN or +inf loss stops training through the real Runner.

Both branches of ``UDASegmentor.uda_train_step`` are covered: one optimizer
(SelfTraining, whose EMA teacher ``EMATeacherHook`` updates after every
iteration) and two optimizers (AdvEnt: a segmentor loss, and the
discriminator loss). A test-only wrapper turns one loss non-finite at
iteration 2; training must stop with ``FloatingPointError`` naming the
iteration and the loss key, and every weight, buffer (BatchNorm statistics,
the EMA teacher) and optimizer state must be what iteration 1 left: the
check runs before any backward or optimizer step, and the statistics the
forward changed in place are restored.
"""
import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper
from mmengine.runner import Runner
from torch import nn

from e2e_utils import full_state, make_tiny_uda_data, tiny_runner_cfg
from mmseg_uda.models.uda import T2S, AdvEnt, BaseUDAMethod, SelfTraining
from mmseg_uda.registry import HOOKS, MODELS
from uda_utils import random_uda_batch, uda_model_cfg

BAD_ITER = 2
ADV_OPTIM = dict(
    constructor='UDAOptimWrapperConstructor',
    segmentor=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
    discriminator=dict(optimizer=dict(type='Adam', lr=1e-4,
                                      betas=(0.9, 0.99))))
SELF_TRAINING = dict(type='SelfTraining', pseudo_weight_ignore_top=2,
                     pseudo_weight_ignore_bottom=4,
                     imnet_feature_dist_lambda=0.0)


@HOOKS.register_module(force=True)
class StateBeforeIterHook(Hook):
    """Test-only: the full training state (weights, buffers, optimizer
    states) when iteration ``at`` starts, after every other hook."""
    priority = 'LOWEST'

    def __init__(self, at):
        self.at = at
        self.state = None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at:
            self.state = full_state(runner)


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('tiny_uda_nonfinite')
    make_tiny_uda_data(str(root))
    return str(root)


TINY_ENCODER = dict(type='TinyConvBackbone', channels=(8, 16), with_bn=True)
SELF_TRAINING_FD = dict(SELF_TRAINING, imnet_feature_dist_lambda=0.005,
                        imnet_feature_dist_classes=[13],
                        imnet_feature_dist_encoder=TINY_ENCODER)
T2S_CFG = dict(
    type='T2S', num_classes=19,
    projection_head=dict(type='ProjectionHead', in_channels=8,
                         hidden_channels=8, out_channels=8,
                         norm_cfg=dict(type='BN')),
    num_queries=8, num_negatives=8, queue_length=16, enqueue_per_class=4,
    projection_ema_alpha=0.99, seed=0)
EMA = [dict(type='EMATeacherHook', alpha=0.99)]

# case -> (methods, index of the poisoned method, its class, the function
#          and loss key that turn bad, optimizer config, hooks)
CASES = {
    'one_optimizer_segmentor_loss': (
        [SELF_TRAINING], 0, SelfTraining, ('loss', 'loss_mix'), None, EMA),
    # T2S's forward also moves its queues, estimates and EMA projection
    # head (frozen parameters), SelfTraining's has a frozen encoder
    'one_optimizer_t2s_loss': (
        [SELF_TRAINING_FD, T2S_CFG], 1, T2S, ('loss', 'loss_t2s'), None,
        EMA),
    'two_optimizers_segmentor_loss': (
        [dict(type='AdvEnt', num_classes=19)], 0, AdvEnt,
        ('loss', 'loss_adv'), ADV_OPTIM, []),
    'two_optimizers_discriminator_loss': (
        [dict(type='AdvEnt', num_classes=19)], 0, AdvEnt,
        ('discriminator_loss', 'loss_D'), ADV_OPTIM, []),
}


def poison(monkeypatch, cls, function, key, value, multiply=False):
    """Make ``cls.function``'s ``key`` non-finite at ``BAD_ITER`` (adding
    ``value``; multiplying also makes the gradients non-finite)."""
    original = getattr(cls, function)

    def patched(self, ctx):
        losses = original(self, ctx)
        assert key in losses, sorted(losses)
        if ctx.iter == BAD_ITER:
            losses[key] = losses[key] * value if multiply \
                else losses[key] + value
        return losses

    monkeypatch.setattr(cls, function, patched)


@pytest.mark.parametrize('value', [float('nan'), float('inf')],
                         ids=['nan', 'inf'])
@pytest.mark.parametrize('case', sorted(CASES))
def test_nonfinite_loss_stops_before_any_update(case, value, data_root,
                                                tmp_path, monkeypatch):
    methods, index, cls, (function, key), optim, hooks = CASES[case]
    poison(monkeypatch, cls, function, key, value)
    cfg = tiny_runner_cfg(
        data_root, str(tmp_path), max_iters=4, methods=methods,
        optim=optim, with_bn=True,
        custom_hooks=hooks + [dict(type='StateBeforeIterHook', at=BAD_ITER)])
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.log_level = 'ERROR'
    runner = Runner.from_cfg(cfg)
    model = runner.model
    prefix = model.methods[index].loss_prefix
    full_key = f'{prefix}.{key}' if prefix else key
    shown = 'nan' if value != value else 'inf'
    with pytest.raises(FloatingPointError,
                       match=rf'iteration {BAD_ITER}: {full_key}={shown} '):
        runner.train()
    assert runner.iter == BAD_ITER  # it stopped in that iteration
    before = next(h for h in runner.hooks
                  if isinstance(h, StateBeforeIterHook)).state
    after = full_state(runner)
    assert set(before) == set(after)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == []
    # the comparison covered what can change: BN statistics, optimizer
    # momenta, and for SelfTraining the EMA teacher
    assert any('running_mean' in k for k in before)
    assert any(k.startswith('optim.') and '.state.' in k for k in before)
    if model.teacher is not None:
        assert any(k.startswith('model.teacher.') for k in before)
    if cls is T2S:
        # the forward changed the EMA projection head, so it was copied and
        # restored; the ImageNet encoder (filled at iteration 0) was not
        # copied at iteration 2
        changed = model._frozen_changed_last_step
        assert any('proj_head_ema' in n for n in changed), changed
        assert not any('imnet_encoder' in n for n in changed), changed
        assert any(k.startswith('model.methods.1.queue_') for k in before)
    # the optimizer state has entries for both optimizers when there are two
    if optim is not None:
        assert any(k.startswith('optim.discriminator.state') for k in before)


def test_finite_run_of_the_same_config_changes_the_state(data_root,
                                                         tmp_path):
    """Control: without the poison, iteration 2 changes weights, BN
    statistics, optimizer state and the EMA teacher, so the comparison
    above is not vacuous."""
    cfg = tiny_runner_cfg(
        data_root, str(tmp_path), max_iters=3, methods=[SELF_TRAINING],
        with_bn=True,
        custom_hooks=[dict(type='EMATeacherHook', alpha=0.99),
                      dict(type='StateBeforeIterHook', at=BAD_ITER)])
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.log_level = 'ERROR'
    runner = Runner.from_cfg(cfg)
    runner.train()
    before = next(h for h in runner.hooks
                  if isinstance(h, StateBeforeIterHook)).state
    after = full_state(runner)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    for part in ('model.student.backbone', 'running_mean', 'model.teacher.',
                 'optim.state'):
        assert any(part in k for k in changed), part


def test_check_finite_off_lets_the_step_run(data_root, tmp_path,
                                            monkeypatch):
    """``train_cfg.check_finite=False`` is the documented way out: the same
    poisoned discriminator loss then reaches the optimizer."""
    poison(monkeypatch, AdvEnt, 'discriminator_loss', 'loss_D',
           float('nan'), multiply=True)
    cfg = tiny_runner_cfg(
        data_root, str(tmp_path), max_iters=3,
        methods=[dict(type='AdvEnt', num_classes=19)], optim=ADV_OPTIM,
        model_extra=dict(train_cfg=dict(check_finite=False)))
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.log_level = 'ERROR'
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 3
    disc = runner.model.methods[0].discriminator
    assert any(not torch.isfinite(p).all() for p in disc.parameters())


class InPlaceFrozenChange(BaseUDAMethod):
    """Test-only: changes a frozen parameter in place during the forward
    (every iteration, as T2S's EMA projection head, or from iteration 1 on
    only) and returns a NaN loss at iteration ``bad_iter``."""

    def __init__(self, from_iter=0, bad_iter=1, **kwargs):
        super().__init__(**kwargs)
        self.from_iter, self.bad_iter = from_iter, bad_iter
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)

    def frozen_modules(self):
        return [self.frozen]

    def loss(self, ctx):
        loss = ctx.student_outputs('source').logits.mean()
        if ctx.iter >= self.from_iter:
            with torch.no_grad():
                self.frozen.weight.add_(1.0)
        if ctx.iter == self.bad_iter:
            loss = loss * float('nan')
        return {'loss_x': loss}


MODELS.register_module(module=InPlaceFrozenChange, force=True)


@pytest.mark.parametrize('from_iter', [0, 1])
def test_frozen_parameter_changed_in_the_forward(from_iter):
    """Changed at every step: copied and restored. Changed for the first
    time in the failing step (not copied, to keep the per-step copy small):
    the error says it could not be restored."""
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(uda_model_cfg(
        [dict(type='InPlaceFrozenChange', from_iter=from_iter)])))
    optim = OptimWrapper(torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.1))
    hub = MessageHub.get_current_instance()
    frozen = model.methods[0].frozen.weight
    try:
        hub.update_info('iter', 0)
        model.train_step(random_uda_batch(), optim)
        before = frozen.detach().clone()
        hub.update_info('iter', 1)
        with pytest.raises(FloatingPointError) as err:
            model.train_step(random_uda_batch(), optim)
    finally:
        hub.update_info('iter', 0)
    if from_iter == 0:
        assert torch.equal(frozen, before)
        assert 'except' not in str(err.value)
    else:
        assert torch.equal(frozen, before + 1.0)
        assert "except ['methods.0.frozen.weight']" in str(err.value)
