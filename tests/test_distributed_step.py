"""2 CPU processes over gloo: one UDA step on half the batch each gives the
same parameters as one process on the whole batch (norm-free tiny model)."""
import copy

import pytest
import torch
from mmengine.config import ConfigDict

from dist_utils import run_distributed
from mmseg_uda.engine import UDADistributedDataParallel
from mmseg_uda.engine.optimizers import UDAOptimWrapperConstructor
from mmseg_uda.registry import MODELS
from uda_utils import random_uda_batch, slice_batch, uda_model_cfg

# SGD on both sides: the update is linear in the gradient, so equal
# parameters mean equal (all-reduced) gradients. Adam's first step is
# ~lr·sign(g) and would turn float-rounding noise in near-zero gradients into
# visible differences.
SEG_OPTIM = dict(optimizer=dict(type='SGD', lr=0.5, momentum=0.9))
ADV_OPTIM = dict(
    segmentor=SEG_OPTIM,
    discriminator=dict(optimizer=dict(type='SGD', lr=0.5, momentum=0.9)))
CASES = {
    'source_only': ([], SEG_OPTIM),
    'advent': ([dict(type='AdvEnt', num_classes=4, lambda_adv=0.5)],
               ADV_OPTIM),
}


def build(methods, state=None):
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(uda_model_cfg(methods)))
    model.init_weights()
    if state is not None:
        model.load_state_dict(state)
    return model


def train_steps(model, optim_cfg, batches, wrapper=None):
    optim = UDAOptimWrapperConstructor(copy.deepcopy(optim_cfg))(model)
    runner = wrapper if wrapper is not None else model
    for batch in batches:
        runner.train_step(batch, optim)
    return model.state_dict()


def ddp_worker(rank, world_size, methods, optim_cfg, state, batches, out):
    model = build(methods, state)
    ddp = UDADistributedDataParallel(module=model, broadcast_buffers=False)
    per_rank = [slice_batch(b, slice(rank, None, world_size)) for b in batches]
    result = train_steps(model, optim_cfg, per_rank, ddp)
    if rank == 0:
        torch.save(result, out)


@pytest.mark.parametrize('case', sorted(CASES))
def test_two_process_step_equals_one_process(case, tmp_path):
    methods, optim_cfg = CASES[case]
    init = build(methods).state_dict()
    batches = [random_uda_batch(batch_size=4, seed=s) for s in range(2)]
    single = train_steps(build(methods, init), optim_cfg,
                         copy.deepcopy(batches))
    out = tmp_path / 'ddp.pth'
    run_distributed(ddp_worker, 2, methods, optim_cfg, init, batches,
                    str(out))
    ddp = torch.load(out)
    moved = 0
    for key, value in single.items():
        assert torch.allclose(ddp[key], value, atol=1e-5), key
        moved += int(not torch.equal(value, init[key]))
    assert moved > 0
