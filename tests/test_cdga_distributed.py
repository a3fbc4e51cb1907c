"""CDGA (``[CDGA]``, configs/cdga) under the real sampler: 2 gloo processes,
each with the batch ``UDAPairSampler`` hands its rank, give the same
gradients (segmentor, grouping network, discriminators; every step), the
same parameters on both ranks and the same global group statistics as 1
process on the global batch the same sampler hands out with world_size 1.
A control run without the cross-process reductions must differ, so the test
can fail."""
import functools

import pytest
import torch
from mmengine.config import ConfigDict

import mmseg_uda.models.losses.class_balance_loss  # noqa: F401
import mmseg_uda.models.losses.cluster_orthogonality_loss  # noqa: F401
import mmseg_uda.models.losses.semantic_consistency_loss  # noqa: F401
import mmseg_uda.models.modules.grouping  # noqa: F401
import mmseg_uda.models.uda.cdga as cdga_module
from dist_utils import (Run, assert_differs_from_single,
                        assert_equal_to_single, compare_runs, patched,
                        random_items, uda_dataset)
from mmseg_uda.registry import MODELS
from uda_utils import uda_model_cfg

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


def structured_items(domain, num, seed, size=64):
    """Quadrant layouts: class c fills one quadrant of a randomly rotated
    layout and has its own colour (target colours shifted), so groups can
    hold different classes. On pure-noise images and labels every group has
    the same class histogram, the grouping losses sit at flat extremes
    (cos(q_k, q_k') = 1) and their gradients are rounding noise."""
    items = random_items(num, size, size, 4, domain == 'source', seed)
    g = torch.Generator().manual_seed(seed)
    palette = torch.tensor([[200, 40, 40], [40, 200, 40], [40, 40, 200],
                            [200, 200, 40]])
    half = size // 2
    quadrant = torch.zeros(size, size, dtype=torch.long)
    quadrant[:half, half:], quadrant[half:, :half] = 1, 2
    quadrant[half:, half:] = 3
    shift = 0 if domain == 'source' else 30
    for item in items:
        img = item['inputs']
        layout = torch.rot90(quadrant, int(torch.randint(4, (1, ),
                                                         generator=g)))
        noise = torch.randint(-25, 26, img.shape, generator=g)
        colour = palette[layout].permute(2, 0, 1) + shift
        img.copy_((colour + noise).clamp(0, 255).to(torch.uint8))
        if domain == 'source':
            label = item['data_samples'].gt_sem_seg.data
            ignore = torch.rand(label.shape, generator=g) < 0.1
            label.copy_(layout.unsqueeze(0))
            label[ignore] = 255
    return items


DATA = uda_dataset(structured_items('source', 8, seed=0),
                   structured_items('target', 7, seed=1))


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


def reductions_removed(model):
    """The control: group statistics and class counts stay per process."""
    model.methods[0].class_balance_loss.reduce_distributed = False
    return patched((cdga_module, 'group_class_distributions',
                    functools.partial(cdga_module.group_class_distributions,
                                      reduce_distributed=False)))


def make_run(method, control=None):
    return Run(build=functools.partial(build, method), optim=OPTIM,
               dataset=DATA, batch_size=2, iterations=2, control=control,
               default_dtype=torch.float64)


RUNS = {case: make_run(method) for case, method in CASES.items()}
CONTROLS = {
    f'{case}_without_reductions': make_run(method, reductions_removed)
    for case, method in CASES.items()
}


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    """Every run in one 2-process group (one spawn) and its 1-process
    reference."""
    return compare_runs({**RUNS, **CONTROLS},
                        tmp_path_factory.mktemp('cdga_ddp'))


@pytest.mark.parametrize('case', sorted(CASES))
def test_two_process_cdga_gradients_equal_one_process(case, results):
    result = results[case]
    # the student, the grouping network and the discriminators all get
    # gradients, each compared relative to its own scale
    groups = {key.split('.')[2] if key.startswith('methods') else 'student'
              for key in result['single']['grads'][0]}
    assert groups == {'student', 'grouping', 'discriminator'}
    assert_equal_to_single(result, grad_tol=1e-9, state_tol=1e-9)
    # batch-global quantities are the same on a process as on the whole batch
    for rank in result['ranks']:
        for it, logs in enumerate(rank['logs']):
            for key in GLOBAL_LOGS:
                assert logs[key] == pytest.approx(
                    result['single']['logs'][it][key], rel=1e-10,
                    abs=1e-12), key


@pytest.mark.parametrize('control', sorted(CONTROLS))
def test_without_the_reductions_two_processes_differ(control, results):
    result = results[control]
    assert_differs_from_single(result, grad_min=1e-6, state_min=1e-8)
    single = result['single']['logs'][-1]['cdga.loss_consist']
    assert all(rank['logs'][-1]['cdga.loss_consist'] !=
               pytest.approx(single, rel=1e-4) for rank in result['ranks'])
