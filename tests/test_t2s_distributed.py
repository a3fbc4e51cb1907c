"""2 CPU processes over gloo, each with half of the batch, give the same
parameters, queues, prototypes and class statistics as one process with the
whole batch, for T2S steps (norm-free tiny model and projection head). The
per-rank batches are contiguous halves: T2S indexes the global batch in
rank order (see ``mmseg_uda/models/uda/t2s.py``)."""
import copy

import torch

from dist_utils import run_distributed
from mmseg_uda.engine import UDADistributedDataParallel
from t2s_utils import build, optim, set_iter, t2s_cfg
from uda_utils import random_uda_batch, slice_batch

CASES = {
    # default: FDA, t2s, batch prototypes, re-weighting
    't2s': t2s_cfg(),
    # both directions (two queue sets), Lab style, EMA prototypes,
    # re-weighted query counts, stylised CE
    'both': t2s_cfg(direction='both', style=dict(type='LabStyleTransfer'),
                    prototype_momentum=0.9, reweight_sampling=True,
                    stylised_ce_weight=0.5),
}
STATISTICS = ('queue', 'prototype', 'perf_', 'class_weights',
              'projection_ema_iter')


def train(model, batches, runner=None, rank=0, world_size=1):
    opt = optim(model)
    per = len(batches[0]['inputs']['source']) // world_size
    for it, batch in enumerate(batches):
        set_iter(it)
        part = slice_batch(batch, slice(rank * per, (rank + 1) * per))
        (runner or model).train_step(part, opt)
    return model.state_dict()


def dist_worker(rank, world_size, inits, batches, out):
    results = {}
    for case, init in inits.items():
        model = build([CASES[case]], state=init)
        ddp = UDADistributedDataParallel(module=model,
                                         broadcast_buffers=False)
        results[case] = train(model, batches, ddp, rank, world_size)
    torch.save(results, f'{out}.{rank}')


def test_two_process_steps_equal_one_process(tmp_path):
    inits = {case: build([cfg]).state_dict() for case, cfg in CASES.items()}
    batches = [random_uda_batch(batch_size=4, seed=s) for s in range(2)]
    out = str(tmp_path / 'ddp.pth')
    run_distributed(dist_worker, 2, inits, batches, out)
    ranks = [torch.load(f'{out}.{r}') for r in range(2)]
    for case, init in inits.items():
        single = train(build([CASES[case]], state=init),
                       copy.deepcopy(batches))
        moved = 0
        for key, value in single.items():
            for rank_states in ranks:
                got = rank_states[case][key]
                if value.is_floating_point():
                    assert torch.allclose(got, value, atol=1e-5), (case, key)
                else:
                    assert torch.equal(got, value), (case, key)
            moved += int(not torch.equal(value, init[key]))
            if any(s in key for s in STATISTICS):
                # bitwise identical on both ranks (reduced, not local)
                assert torch.equal(ranks[0][case][key],
                                   ranks[1][case][key]), (case, key)
        assert moved > 0, case
        for side in ('source', 'target') if case == 'both' else ('source', ):
            assert int(single[f'methods.0.queue_fill_{side}'].sum()) > 0
        assert single['methods.0.perf_initialized'].any()
