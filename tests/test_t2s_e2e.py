"""T2S through mmengine's Runner on tiny converted data: the hooks it is
configured with (EMA teacher, λ warm-up, debug pictures) run, and
interrupting + resuming gives exactly the uninterrupted run (queues,
pointers, prototypes, r_c, EMA projection head, optimizer state)."""
import glob
import os.path as osp

import pytest

from e2e_utils import assert_resume_exact, make_tiny_uda_data, \
    tiny_runner_cfg
from t2s_utils import t2s_cfg


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('t2s_data')
    make_tiny_uda_data(str(root))
    return str(root)


def test_t2s_resume_is_exact(data_root, tmp_path):
    method = t2s_cfg(num_classes=19, prototype_momentum=0.9)
    cfg = tiny_runner_cfg(
        data_root,
        str(tmp_path),
        methods=[method],
        custom_hooks=[
            dict(type='EMATeacherHook', alpha=0.99),
            dict(type='LossWeightScheduleHook',
                 schedules={'t2s.loss_t2s': dict(type='linear', begin=0,
                                                 end=3)}),
            dict(type='UDADebugVisualizationHook', interval=2),
        ])
    state = assert_resume_exact(cfg, total_iters=4, tmp_path=tmp_path)
    prefix = 'model.methods.0.'
    assert int(state[prefix + 'projection_ema_iter']) == 3
    assert int(state[prefix + 'queue_fill_source'].sum()) > 0
    assert state[prefix + 'prototype_valid_source'].any()
    assert state[prefix + 'perf_initialized'].any()
    # the debug hook drew its pictures (they include 'stylised_source')
    assert glob.glob(osp.join(str(tmp_path), '**', 'iter_*.png'),
                     recursive=True)
