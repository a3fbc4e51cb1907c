"""2 CPU processes over gloo: CDGA steps on half the batch each give the same
parameters (segmentor, grouping network, discriminators) and the same global
group statistics as one process on the whole batch. A control run without
the cross-process reductions must differ, so the test can fail."""
import contextlib
import copy
import functools

import pytest
import torch
from mmengine.config import ConfigDict

import mmseg_uda.models.losses.class_balance_loss  # noqa: F401
import mmseg_uda.models.losses.cluster_orthogonality_loss  # noqa: F401
import mmseg_uda.models.losses.semantic_consistency_loss  # noqa: F401
import mmseg_uda.models.modules.grouping  # noqa: F401
import mmseg_uda.models.uda.cdga as cdga_module
from dist_utils import run_distributed
from mmseg_uda.engine import UDADistributedDataParallel
from mmseg_uda.engine.optimizers import UDAOptimWrapperConstructor
from mmseg_uda.registry import MODELS
from uda_utils import random_uda_batch, slice_batch, uda_model_cfg

# SGD on both optimizers: equal parameters after a step mean equal
# (all-reduced) gradients (see test_distributed_step.py).
OPTIM = dict(
    segmentor=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
    discriminator=dict(optimizer=dict(type='SGD', lr=0.5, momentum=0.9)))
# Large weights so the batch-global terms dominate the gradients.
BASE = dict(
    type='CDGA', num_classes=4, num_groups=3, lambda_adv=0.5,
    grouping=dict(type='CrossDomainGroupingNetwork', channels=16),
    discriminator=dict(type='FCDiscriminator', ndf=8),
    consistency_loss=dict(type='SemanticConsistencyLoss', loss_weight=5.0),
    orthogonality_loss=dict(type='ClusterOrthogonalityLoss',
                            loss_weight=5.0),
    class_balance=True)
CASES = {
    'per_group_d': dict(BASE),
    'shared_d_sym_kl': dict(
        BASE, shared_discriminator=True, source_stats='prediction',
        consistency_loss=dict(type='SemanticConsistencyLoss',
                              distance='sym_kl', loss_weight=5.0)),
}
GLOBAL_LOGS = ('cdga.loss_adv', 'cdga.loss_consist', 'cdga.loss_orth',
               'cdga.loss_D', 'cdga.group_entropy_src',
               'cdga.group_entropy_tgt', 'cdga.group1_tgt_class_share',
               'cdga.group2_src_pixel_share')


def structured_batch(seed, batch_size=4, size=64):
    """Quadrant layouts: class c fills one quadrant of a randomly rotated
    layout and has its own colour (target colours shifted), so groups can
    hold different classes. On pure-noise images and labels every group has
    the same class histogram, the grouping losses sit at flat extremes
    (cos(q_k, q_k') = 1) and their gradients are rounding noise."""
    data = random_uda_batch(batch_size=batch_size, h=size, w=size,
                            seed=seed, num_classes=4, ignore_frac=0.1)
    g = torch.Generator().manual_seed(seed)
    palette = torch.tensor([[200, 40, 40], [40, 200, 40], [40, 40, 200],
                            [200, 200, 40]])
    half = size // 2
    quadrant = torch.zeros(size, size, dtype=torch.long)
    quadrant[:half, half:], quadrant[half:, :half] = 1, 2
    quadrant[half:, half:] = 3
    for domain, shift in (('source', 0), ('target', 30)):
        for i, img in enumerate(data['inputs'][domain]):
            layout = torch.rot90(quadrant, int(torch.randint(4, (1, ),
                                                             generator=g)))
            noise = torch.randint(-25, 26, img.shape, generator=g)
            colour = palette[layout].permute(2, 0, 1) + shift
            img.copy_((colour + noise).clamp(0, 255).to(torch.uint8))
            if domain == 'source':
                label = data['data_samples'][domain][i].gt_sem_seg.data
                ignore = label == 255
                label.copy_(layout.unsqueeze(0))
                label[ignore] = 255
    return data


def build(method, state=None):
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(uda_model_cfg([method])))
    model.init_weights()
    if state is None:
        # confident, pixel-varying predictions and non-uniform groups (at
        # the near-uniform random init the group terms are nearly constant)
        with torch.no_grad():
            model.student.decode_head.conv_seg.weight.mul_(10.0)
            model.methods[0].grouping.layers[-1].weight.mul_(10.0)
    else:
        model.load_state_dict(state)
    return model


def record_gradients(model, optim):
    """Wrap each optimizer's ``step`` to keep a copy of the gradients it is
    about to apply (after DDP's all-reduce): {step index: {name: grad}}."""
    names = {id(p): n for n, p in model.named_parameters()}
    record = []

    def wrap(wrapper):
        original = wrapper.step

        def step(**kwargs):
            grads = {
                names[id(p)]: p.grad.detach().clone()
                for group in wrapper.optimizer.param_groups
                for p in group['params'] if p.grad is not None
            }
            if not record or set(grads) & set(record[-1]):
                record.append({})
            record[-1].update(grads)
            return original(**kwargs)

        wrapper.step = step

    for wrapper in optim.values():
        wrap(wrapper)
    return record


def train_steps(model, batches, wrapper=None):
    """Steps on ``batches``; returns the gradients of every step and the
    last step's logged values."""
    optim = UDAOptimWrapperConstructor(copy.deepcopy(OPTIM))(model)
    record = record_gradients(model, optim)
    runner = wrapper if wrapper is not None else model
    for batch in batches:
        log_vars = runner.train_step(batch, optim)
    return record, {k: v.detach() for k, v in log_vars.items()}


@contextlib.contextmanager
def reductions(model, enabled):
    """``enabled=False`` is the control: group statistics and class counts
    stay per process."""
    original = cdga_module.group_class_distributions
    if not enabled:
        model.methods[0].class_balance_loss.reduce_distributed = False
        cdga_module.group_class_distributions = functools.partial(
            original, reduce_distributed=False)
    try:
        yield
    finally:
        cdga_module.group_class_distributions = original


def ddp_worker(rank, world_size, runs, batches, out):
    torch.set_default_dtype(torch.float64)
    results = {}
    for name, (method, state, reduce) in runs.items():
        model = build(method, state)
        with reductions(model, reduce):
            ddp = UDADistributedDataParallel(
                module=model, broadcast_buffers=False)
            per_rank = [slice_batch(b, slice(rank, None, world_size))
                        for b in batches]
            results[name] = train_steps(model, per_rank, ddp)
    if rank == 0:
        torch.save(results, out)


RUNS = {
    'per_group_d': (CASES['per_group_d'], True),
    'shared_d_sym_kl': (CASES['shared_d_sym_kl'], True),
    'control_without_reductions': (CASES['per_group_d'], False),
}


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    """Every run in one 2-process group (one spawn), and the single-process
    references: {name: (single grads, single logs, ddp grads, ddp logs)}."""
    batches = [structured_batch(seed=s) for s in range(2)]
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        inits = {name: build(method).state_dict()
                 for name, (method, _) in RUNS.items()}
        singles = {name: train_steps(build(method, inits[name]),
                                     copy.deepcopy(batches))
                   for name, (method, _) in RUNS.items()}
    finally:
        torch.set_default_dtype(default_dtype)
    out = tmp_path_factory.mktemp('cdga_ddp') / 'ddp.pth'
    runs = {name: (method, inits[name], reduce)
            for name, (method, reduce) in RUNS.items()}
    run_distributed(ddp_worker, 2, runs, batches, str(out))
    ddp = torch.load(out)
    return {name: (*singles[name], *ddp[name]) for name in RUNS}


def gradient_errors(single, ddp):
    """Per module group (student, grouping, discriminator) and step: the
    largest gradient difference relative to the group's largest gradient."""
    assert len(single) == len(ddp) == 2
    errors = {}
    for step_single, step_ddp in zip(single, ddp):
        assert set(step_single) == set(step_ddp)
        scale, diff = {}, {}
        for key, grad in step_single.items():
            group = key.split('.')[2] if key.startswith('methods') \
                else 'student'
            scale[group] = max(scale.get(group, 0.0),
                               grad.abs().max().item())
            diff[group] = max(diff.get(group, 0.0),
                              (step_ddp[key] - grad).abs().max().item())
        for group in scale:
            assert scale[group] > 0, group  # every part gets gradients
            errors[group] = max(errors.get(group, 0.0),
                                diff[group] / scale[group])
    return errors


@pytest.mark.parametrize('case', sorted(CASES))
def test_two_process_cdga_gradients_equal_one_process(case, results):
    single, single_logs, ddp, ddp_logs = results[case]
    errors = gradient_errors(single, ddp)
    assert set(errors) == {'student', 'grouping', 'discriminator'}
    for group, error in errors.items():
        assert error < 1e-9, (group, error)
    # batch-global quantities are the same on a process as on the whole batch
    for key in GLOBAL_LOGS:
        assert torch.allclose(ddp_logs[key], single_logs[key],
                              rtol=1e-10, atol=1e-12), key


def test_without_the_reductions_two_processes_differ(results):
    single, single_logs, ddp, ddp_logs = results[
        'control_without_reductions']
    errors = gradient_errors(single, ddp)
    for group, error in errors.items():
        assert error > 1e-6, (group, error)
    assert not torch.allclose(ddp_logs['cdga.loss_consist'],
                              single_logs['cdga.loss_consist'], rtol=1e-4)
