"""T2S under the real sampler: 2 gloo processes, each with the batch
``UDAPairSampler`` hands its rank (global samples r, r + 2, ...), give the
same gradients (every step) and the same parameters, queues, prototypes and
class statistics on both ranks as 1 process on the global batch the same
sampler hands out with world_size 1. Method lists as shipped:
``[SelfTraining, T2S]`` (every T2S UDA config) and ``[T2S]`` in DG mode
(``configs/t2s/gta2cs_dg.py``: source only, random style), plus ``[T2S]``
alone and a variant with both directions and target pseudo-label pixels.

Negative controls (run in the same process group): T2S numbering the global
batch rank-major (the processes' batches concatenated, as T2S once did,
while the sampler interleaves them), and T2S without its all-reduces, must
each depart from the 1-process run."""
import functools

import pytest
import torch
from mmengine.dist import all_gather, get_rank

import mmseg_uda.models.uda.t2s as t2s_module
from dist_utils import (Run, assert_differs_from_single,
                        assert_equal_to_single, compare_runs, no_all_reduce,
                        patched, random_items, uda_dataset)
from t2s_utils import SGD, build, t2s_cfg

# Tiny SelfTraining (DAFormer's recipe, small FD encoder) for the shipped
# composition [SelfTraining, T2S].
SELF_TRAINING = dict(
    type='SelfTraining',
    pseudo_threshold=0.3,
    pseudo_weight_scope='batch',
    class_mix_candidates='batch',
    imnet_feature_dist_lambda=0.5,
    imnet_feature_dist_classes=[1, 2],
    imnet_feature_dist_encoder=dict(type='TinyConvBackbone',
                                    channels=(8, 16)),
    seed=3)
METHODS = {
    'selftraining_t2s': [SELF_TRAINING, t2s_cfg()],
    't2s': [t2s_cfg()],
    # both directions (two queue sets), Lab style, EMA prototypes,
    # re-weighted query counts, stylised CE, stylised and confident target
    # pixels as two segments of the candidate list
    't2s_both': [
        t2s_cfg(direction='both', style=dict(type='LabStyleTransfer'),
                target_side='both', pseudo_threshold=0.3,
                prototype_momentum=0.9, reweight_sampling=True,
                stylised_ce_weight=0.5)
    ],
    'dg': [
        t2s_cfg(dg_mode=True, style=dict(type='RandomStyleTransfer'),
                perf_metric='stylised_iou')
    ],
    # the shipped style engine (random weights: nothing to download)
    'dg_style_augmentor': [
        t2s_cfg(dg_mode=True,
                style=dict(type='StyleAugmentorStyleTransfer',
                           random_weights=True, base_embedding='zero'),
                perf_metric='stylised_iou')
    ],
}
SOURCE = random_items(8, 32, 32, 4, True, seed=0)
TARGET = random_items(7, 32, 32, 4, False, seed=1)
UDA_DATA = uda_dataset(SOURCE, TARGET)
DG_DATA = uda_dataset(random_items(8, 32, 32, 4, True, seed=0))


def build_model(methods, state):
    model = build(methods, state=state)
    if state is None:
        with torch.no_grad():
            # a confident teacher that differs from the student, so the
            # pseudo-labels (SelfTraining, target_side='both') matter
            model.teacher.decode_head.conv_seg.weight.mul_(50.0)
            for p in model.student.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return model


# --- negative controls ------------------------------------------------------
def _rank_major_indices(local_size, device=None):
    return torch.arange(local_size, device=device) + get_rank() * local_size


def _rank_major_gather(x):
    return torch.cat(all_gather(x.contiguous()))


def _rank_major_rank_and_local(index, local_size):
    return torch.div(index, local_size, rounding_mode='floor'), \
        index % local_size


def rank_major_numbering(model):
    """T2S numbers the global batch rank-major (the old numbering)."""
    return patched((t2s_module, 'global_indices', _rank_major_indices),
                   (t2s_module, 'gather_global', _rank_major_gather),
                   (t2s_module, 'rank_and_local_index',
                    _rank_major_rank_and_local))


def without_all_reduce(model):
    """T2S's key sums, enqueued keys and r_c statistics stay local."""
    return patched((t2s_module, 'all_reduce', no_all_reduce))


def make_run(case, control=None):
    data = DG_DATA if case.startswith('dg') else UDA_DATA
    return Run(build=functools.partial(build_model, METHODS[case]),
               optim=SGD, dataset=data, batch_size=2, iterations=2,
               control=control)


RUNS = {case: make_run(case) for case in METHODS}
CONTROLS = {
    f'{case}_rank_major': make_run(case, rank_major_numbering)
    for case in METHODS
}
CONTROLS['t2s_without_all_reduce'] = make_run('t2s', without_all_reduce)


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    return compare_runs({**RUNS, **CONTROLS},
                        tmp_path_factory.mktemp('t2s_ddp'))


@pytest.mark.parametrize('case', sorted(RUNS))
def test_two_processes_on_the_sampler_split_equal_one(case, results):
    result = results[case]
    # float32: measured ≤ 5e-6 (sum order); the controls depart by ≥ 0.4
    assert_equal_to_single(result, grad_tol=3e-5, state_tol=1e-5)
    single = result['single']['state']
    t2s = f'methods.{len(METHODS[case]) - 1}.'
    sides = ('source', 'target') if case == 't2s_both' else ('source', )
    for side in sides:  # the queues were filled and are compared
        assert int(single[f'{t2s}queue_fill_{side}'].sum()) > 0
    assert single[f'{t2s}perf_initialized'].any()
    for key in single:
        if key.startswith(t2s) and 'proj_head.' not in key:
            # reduced state: bitwise identical on both ranks
            assert torch.equal(result['ranks'][0]['state'][key],
                               result['ranks'][1]['state'][key]), key


@pytest.mark.parametrize('control', sorted(CONTROLS))
def test_negative_control_departs_from_one_process(control, results):
    assert_differs_from_single(results[control])

