"""HRDA under the real sampler: 2 gloo processes, each with the batch
``UDAPairSampler`` hands its rank, give the same gradients and parameters on
both ranks as 1 process on the global batch, for ``[SelfTraining]`` and
``[SelfTraining, MaskedImageConsistency]`` and ``[SelfTraining,
MaskedImageConsistency, T2S]`` on an ``HRDAEncoderDecoder``.

This needs one detail box per global batch: ``UDASegmentor`` seeds the
student's ``crop_rng`` from (base seed, iteration) only, the same on every
process. Negative control: boxes drawn from each process's own global RNG
(as the official HRDA does) depart from the 1-process run.

The tiny network has no BatchNorm and no dropout: per-process batch
statistics and per-process dropout masks are outside this guarantee (SyncBN
and the per-rank reseeding, see the README)."""
import functools

import pytest
import torch
from mmengine.config import ConfigDict

from dist_utils import (Run, assert_differs_from_single,
                        assert_equal_to_single, assert_sampler_split,
                        compare_runs, patched, random_items, uda_dataset)
from mmseg_uda.models.segmentors import UDASegmentor
from mmseg_uda.registry import MODELS
from t2s_utils import t2s_cfg
from test_hrda_self_training import hrda_segmentor

OPTIM = dict(optimizer=dict(type='SGD', lr=0.5, momentum=0.9))


def hrda_student():
    """The tiny HRDA student of test_hrda_self_training.py without
    BatchNorm and dropout (outside the 2-process guarantee, see above)."""
    cfg = hrda_segmentor()
    cfg['decode_head'].update(norm_cfg=None, dropout_ratio=0.0)
    return cfg


SELF_TRAINING = dict(type='SelfTraining', pseudo_threshold=0.3,
                     pseudo_weight_ignore_top=0,
                     pseudo_weight_ignore_bottom=0,
                     imnet_feature_dist_lambda=0.0, seed=1)
MIC = dict(type='MaskedImageConsistency', mask_mode='separatetrgaug',
           mask_generator=dict(type='block', mask_ratio=0.7,
                               mask_block_size=8),
           seed=5)
# T2S-DA on the MIC(HRDA) base (configs/t2s/gta2cs_hrda.py's composition);
# the HRDA head's pre-classifier feature has 16 channels
T2S = t2s_cfg(projection_head=dict(type='ProjectionHead', in_channels=16,
                                   hidden_channels=16, out_channels=8,
                                   norm_cfg=None))
DATA = uda_dataset(random_items(8, 32, 32, 4, True, seed=0),
                   random_items(7, 32, 32, 4, False, seed=1))


def build(methods, state=None):
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(
        type='UDASegmentor', segmentor=hrda_student(),
        methods=[dict(m) for m in methods]))
    model.init_weights()
    if state is None:
        model.teacher.load_state_dict(model.student.state_dict())
        model.teacher_initialized.fill_(1)
        with torch.no_grad():  # a confident teacher unlike the student
            for p in model.teacher.decode_head.parameters():
                p.mul_(3.0)
            for p in model.student.parameters():
                p.add_(0.05 * torch.randn_like(p))
    else:
        model.load_state_dict(state)
    return model


def per_process_boxes(model):
    """What official HRDA does: each process draws its box from its own
    (per-rank seeded) global numpy RNG."""
    reseed = UDASegmentor._reseed

    def reseed_without_shared_rng(self, iteration):
        reseed(self, iteration)
        self.student.crop_rng = None

    return patched((UDASegmentor, '_reseed', reseed_without_shared_rng))


RUNS = {
    'hrda_selftraining': Run(functools.partial(build, [SELF_TRAINING]),
                             OPTIM, DATA, 2, 2),
    'hrda_selftraining_mic': Run(
        functools.partial(build, [SELF_TRAINING, MIC]), OPTIM, DATA, 2, 2),
    'hrda_selftraining_mic_t2s': Run(
        functools.partial(build, [SELF_TRAINING, MIC, T2S]), OPTIM, DATA, 2,
        2),
    'hrda_per_process_boxes': Run(
        functools.partial(build, [SELF_TRAINING]), OPTIM, DATA, 2, 2,
        control=per_process_boxes),
}


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    return compare_runs(RUNS, tmp_path_factory.mktemp('hrda_ddp'))


@pytest.mark.parametrize('name', ['hrda_selftraining',
                                  'hrda_selftraining_mic',
                                  'hrda_selftraining_mic_t2s'])
def test_hrda_two_processes_equal_one(name, results):
    result = results[name]
    assert_sampler_split(result)
    assert_equal_to_single(result)
    logs = result['single']['logs']
    assert all(it['selftraining.loss_mix_hr'] > 0 for it in logs)
    if name.endswith('t2s'):  # T2S took part: its queues were filled
        assert int(result['single']['state'][
            'methods.2.queue_fill_source'].sum()) > 0


def test_negative_control_per_process_boxes_depart(results):
    assert_differs_from_single(results['hrda_per_process_boxes'])
