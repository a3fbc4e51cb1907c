"""Source-only (``[]``), AdvEnt (``[AdvEnt]``) and PLCA (``[PLCA]``) under
the real sampler: 2 gloo processes, each with the batch ``UDAPairSampler``
hands its rank, give the same gradients (every step, segmentor and
discriminator) and parameters on both ranks as 1 process on the global batch
the same sampler hands out with world_size 1 (norm-free tiny model).

Negative controls: the train step inside ``DDP.no_sync()`` (no gradient
all-reduce: the only cross-process reduction of source-only and AdvEnt), and
PLCA with its Lovász gather and association pixel count kept per process,
must each depart from the 1-process run."""
import functools

import pytest
import torch
from mmengine.config import ConfigDict

import mmseg_uda.models.losses.cycle_association_loss as association_module
import mmseg_uda.models.losses.distributed_lovasz_loss as lovasz_module
from dist_utils import (Run, assert_differs_from_single,
                        assert_equal_to_single, compare_runs,
                        group_gradient_errors, no_all_reduce,
                        no_gradient_sync, patched, random_items, uda_dataset)
from mmseg_uda.registry import MODELS
from uda_utils import uda_model_cfg

# SGD on both sides: the update is linear in the gradient, so equal
# parameters mean equal (all-reduced) gradients. Adam's first step is
# ~lr·sign(g) and would turn float-rounding noise in near-zero gradients into
# visible differences. float64: the AdvEnt discriminator's small gradients
# then compare to 1e-9 (float32 rounding reaches ~6e-6 of their scale).
SEG_OPTIM = dict(optimizer=dict(type='SGD', lr=0.5, momentum=0.9))
ADV_OPTIM = dict(
    segmentor=SEG_OPTIM,
    discriminator=dict(optimizer=dict(type='SGD', lr=0.5, momentum=0.9)))
PLCA = dict(
    type='PLCA',
    feat_association=dict(
        type='CycleAssociationLoss', metric='cos', chunk_size=5,
        reduction='global_mean', loss_name='loss_ass_feat'),
    cls_association=dict(
        type='CycleAssociationLoss', metric='kl', chunk_size=7,
        reduction='global_mean', loss_name='loss_ass_cls'))
CASES = {
    'source_only': ([], SEG_OPTIM),
    'advent': ([dict(type='AdvEnt', num_classes=4, lambda_adv=0.5)],
               ADV_OPTIM),
    'plca': ([PLCA], SEG_OPTIM),
}
DATA = uda_dataset(random_items(8, 32, 32, 4, True, seed=0),
                   random_items(7, 32, 32, 4, False, seed=1))


def build(methods, state=None):
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(uda_model_cfg(methods)))
    model.init_weights()
    if state is not None:
        model.load_state_dict(state)
    return model


def plca_reductions_removed(model):
    """Lovász over this process's pixels only; association averaged over
    this process's valid pixels only."""
    return patched((lovasz_module, 'get_world_size', lambda: 1),
                   (lovasz_module, 'get_rank', lambda: 0),
                   (association_module, 'all_reduce', no_all_reduce))


def make_run(case, control=None):
    methods, optim = CASES[case]
    return Run(build=functools.partial(build, methods), optim=optim,
               dataset=DATA, batch_size=2, iterations=2, control=control,
               default_dtype=torch.float64)


RUNS = {case: make_run(case) for case in CASES}
CONTROLS = {
    'source_only_no_gradient_sync': make_run('source_only',
                                             no_gradient_sync),
    'advent_no_gradient_sync': make_run('advent', no_gradient_sync),
    'plca_without_reductions': make_run('plca', plca_reductions_removed),
}


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    return compare_runs({**RUNS, **CONTROLS},
                        tmp_path_factory.mktemp('ddp_step'))


@pytest.mark.parametrize('case', sorted(CASES))
def test_two_process_steps_equal_one_process(case, results):
    assert_equal_to_single(results[case], grad_tol=1e-9, state_tol=1e-9)
    if case == 'advent':
        groups = group_gradient_errors(results[case]['single']['grads'],
                                       results[case]['ranks'][0]['grads'])
        assert set(groups) == {'student', 'methods.0.discriminator'}


@pytest.mark.parametrize('control', sorted(CONTROLS))
def test_negative_control_departs_from_one_process(control, results):
    result = results[control]
    assert_differs_from_single(result)
    if control == 'advent_no_gradient_sync':
        # the discriminator's own gradients are the ones left unsynchronised
        errors = group_gradient_errors(result['single']['grads'],
                                       result['ranks'][0]['grads'])
        assert errors['methods.0.discriminator'] > 1e-3, errors
