"""``[SelfTraining, MaskedImageConsistency]`` under the real sampler: 2 gloo
processes, each with the batch ``UDAPairSampler`` hands its rank, give the
same gradients and parameters as 1 process on the global batch.

MIC adds per-sample draws (jitter parameters, block mask) seeded by
(seed, iteration, global sample index g = i·world_size + rank) and
per-iteration draws (jitter/blur gates, one blur σ) seeded by
(seed, iteration); the pseudo-weight it reuses is SelfTraining's global
one. Negative control: MIC's masks numbered rank-major depart from the
1-process run."""
import functools

import pytest

import mmseg_uda.models.uda.mic as mic_module
from dist_utils import (Run, build_with_confident_teacher,
                        rank_major_indices, assert_differs_from_single,
                        assert_equal_to_single, compare_runs, patched,
                        random_items, uda_dataset)
from mmseg_uda.models.uda.mic import mic_iteration_rng
from uda_utils import uda_model_cfg

OPTIM = dict(optimizer=dict(type='SGD', lr=0.5, momentum=0.9))


def _seed_with_jitter_and_blur(iterations):
    """A MIC seed whose gates apply jitter (> 0.2) and blur (> 0.5) in
    every tested iteration."""
    for seed in range(1000):
        draws = [mic_iteration_rng(seed, it) for it in iterations]
        if all(r.uniform() > 0.2 and r.uniform() > 0.5 for r in draws):
            return seed
    raise AssertionError('no seed found')


METHODS = [
    dict(type='SelfTraining', pseudo_threshold=0.3,
         pseudo_weight_ignore_top=2, pseudo_weight_ignore_bottom=3,
         imnet_feature_dist_lambda=0.0, seed=1),
    dict(type='MaskedImageConsistency', mask_mode='separatetrgaug',
         mask_generator=dict(type='block', mask_ratio=0.7,
                             mask_block_size=8),
         seed=_seed_with_jitter_and_blur([0, 1])),
]
DATA = uda_dataset(random_items(8, 32, 32, 4, True, seed=0),
                   random_items(7, 32, 32, 4, False, seed=1))


def build(state=None):
    return build_with_confident_teacher(uda_model_cfg(METHODS), state)


def rank_major_numbering(model):
    """MIC's per-sample draws seeded with rank-major indices."""
    return patched((mic_module, 'global_indices', rank_major_indices))


make_run = functools.partial(Run, build, OPTIM, DATA, 2, 2)


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    return compare_runs(
        {'mic': make_run(),
         'mic_rank_major': make_run(control=rank_major_numbering)},
        tmp_path_factory.mktemp('mic_ddp'))


def test_self_training_plus_mic_two_processes_equal_one(results):
    result = results['mic']
    assert_equal_to_single(result)
    logs = result['single']['logs']
    assert all(0 < it['mic.mask_keep_ratio'] < 1 for it in logs)
    assert all(it['mic.loss_masked'] > 0 for it in logs)


def test_negative_control_rank_major_masks_depart(results):
    assert_differs_from_single(results['mic_rank_major'])
