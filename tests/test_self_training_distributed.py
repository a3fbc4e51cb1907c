"""2 CPU processes over gloo: two SelfTraining iterations on half the batch
each give the same parameters as one process on the whole batch.

This holds only because the batch-level quantities are global (ClassMix
candidate classes, the 'batch' pseudo-weight, the FD cell count) and every
random draw (ClassMix classes, jitter parameters, blur sigma) depends on
(seed, iteration, global sample index), with rank r holding the global
samples r, r + 2, ... as mmengine's samplers give them."""
import copy

import numpy as np
import torch
from mmengine.config import ConfigDict
from mmengine.logging import MessageHub
from mmengine.structures import PixelData

import mmseg_uda.models.uda.self_training  # noqa: F401 (registers)
from dist_utils import run_distributed
from mmseg_uda.engine import UDADistributedDataParallel
from mmseg_uda.engine.hooks import ema_momentum, ema_update
from mmseg_uda.engine.optimizers import UDAOptimWrapperConstructor
from mmseg_uda.models.uda.dacs_transforms import (global_label_values,
                                                  iteration_rng)
from mmseg_uda.registry import MODELS
from uda_utils import random_uda_batch, slice_batch, uda_model_cfg

# SGD: the update is linear in the gradient (see test_distributed_step.py).
OPTIM = dict(optimizer=dict(type='SGD', lr=0.5, momentum=0.9))
# Per global sample, the classes its source label contains: the two
# processes see different class sets ({0, 255} and {1, 2, 3}).
IMAGE_CLASSES = [(0, ), (1, 2), (0, 255), (3, )]


def _seed_with_jitter_and_blur(iterations):
    """A base seed whose iteration draws apply both colour jitter (draw >
    p = 0.2) and blur (draw > 0.5) in every tested iteration."""
    for seed in range(1000):
        draws = [iteration_rng(seed, it) for it in iterations]
        if all(r.uniform() > 0.2 and r.uniform() > 0.5 for r in draws):
            return seed
    raise AssertionError('no seed found')


SEED = _seed_with_jitter_and_blur([0, 1])
METHOD = dict(
    type='SelfTraining',
    pseudo_threshold=0.3,
    pseudo_weight_scope='batch',
    pseudo_weight_ignore_top=2,
    pseudo_weight_ignore_bottom=3,
    class_mix_candidates='batch',
    imnet_feature_dist_lambda=0.5,
    imnet_feature_dist_classes=[1, 2],
    imnet_feature_dist_encoder=dict(type='TinyConvBackbone',
                                    channels=(8, 16)),
    seed=SEED)


def make_batches():
    batches = []
    for it in range(2):
        batch = random_uda_batch(batch_size=4, h=32, w=32, seed=it)
        g = torch.Generator().manual_seed(10 + it)
        for sample, classes in zip(batch['data_samples']['source'],
                                   IMAGE_CLASSES):
            pick = torch.randint(0, len(classes), (8, 8), generator=g)
            coarse = torch.tensor(classes)[pick]
            label = coarse.repeat_interleave(4, 0).repeat_interleave(4, 1)
            sample.gt_sem_seg = PixelData(data=label[None])
        batches.append(batch)
    return batches


def build(state=None):
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(uda_model_cfg([METHOD])))
    model.init_weights()
    if state is None:
        model.teacher.load_state_dict(model.student.state_dict())
        model.teacher_initialized.fill_(1)
        with torch.no_grad():
            # a confident teacher (the init head is near-uniform) that
            # differs from the student, so the pseudo-labels and their
            # weight matter
            model.teacher.decode_head.conv_seg.weight.mul_(200.0)
            for p in model.student.parameters():
                p.add_(0.05 * torch.randn_like(p))
    else:
        model.load_state_dict(state)
    return model


def train(model, batches, runner=None):
    optim = UDAOptimWrapperConstructor(copy.deepcopy(OPTIM))(model)
    hub = MessageHub.get_current_instance()
    logs = []
    for it, batch in enumerate(batches):
        hub.update_info('iter', it)
        logs.append((runner or model).train_step(batch, optim))
        # EMATeacherHook.after_train_iter at runner.iter == it
        ema_update(model.teacher, model.student, ema_momentum(it + 1, 0.999))
    return model.state_dict(), logs


def ddp_worker(rank, world_size, state, batches, out):
    model = build(state)
    ddp = UDADistributedDataParallel(module=model, broadcast_buffers=False)
    local = [slice_batch(b, slice(rank, None, world_size)) for b in batches]
    result, logs = train(model, local, ddp)
    labels = torch.stack([
        s.gt_sem_seg.data[0] for s in local[0]['data_samples']['source']
    ])
    global_classes = global_label_values(labels, 256)  # a collective
    if rank == 0:
        torch.save(
            dict(state=result,
                 conf=[float(log['selftraining.pseudo_conf_ratio'])
                       for log in logs],
                 local_classes=torch.unique(labels),
                 global_classes=global_classes), out)


def test_self_training_two_processes_equal_one(tmp_path):
    init = build().state_dict()
    batches = make_batches()
    single, logs = train(build(init), copy.deepcopy(batches))
    out = tmp_path / 'ddp.pth'
    run_distributed(ddp_worker, 2, init, batches, str(out))
    ddp = torch.load(out)
    # the setup exercises the global reductions: the ClassMix candidates of
    # rank 0 alone differ from those of the global batch
    assert ddp['local_classes'].tolist() == [0, 255]
    assert ddp['global_classes'].tolist() == [0, 1, 2, 3, 255]
    conf = [float(log['selftraining.pseudo_conf_ratio']) for log in logs]
    assert np.allclose(ddp['conf'], conf)
    assert 0 < conf[0] < 1
    # iteration 0 copies the student into the frozen encoder (FD = 0); the
    # student has moved at iteration 1
    assert logs[0]['selftraining.loss_fd'] == 0
    assert logs[1]['selftraining.loss_fd'] > 0
    moved = 0
    for key, value in single.items():
        assert torch.allclose(ddp['state'][key].float(), value.float(),
                              atol=1e-5), key
        moved += int(not torch.equal(value, init[key]))
    assert moved > 0
