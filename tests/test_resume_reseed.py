"""Per-iteration reseeding (``UDASegmentor._reseed``) and the seed buffers.

mmengine does not checkpoint RNG states, so a resumed run only draws what
the uninterrupted run drew (dropout and DropPath masks, anything a method
takes from the global RNGs) because every iteration reseeds torch, numpy
and ``random`` from (checkpointed base seed, iteration, rank). These tests
train a tiny MiT (DropPath, attention and MLP dropout) with a dropout
SegFormer head on the real Runner with two dataloader workers, and check
that a resumed run equals an uninterrupted one bit for bit; negative
controls show that the same test fails without reseeding, or with a seed
that ignores the iteration. ``load_from`` (fine-tuning) must not carry the
old run's seeds; a resume must.
"""
import copy
import hashlib
import os.path as osp

import random

import numpy as np
import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmengine.runner import Runner

from e2e_utils import (NUM_CLASSES, full_state, make_tiny_uda_data,
                       tiny_runner_cfg, train)
from mmseg_uda.models.segmentors import uda_segmentor
from mmseg_uda.models.segmentors.uda_segmentor import (UDASegmentor,
                                                       _is_dropout_like,
                                                       iteration_seed,
                                                       seed_global_rngs)
from mmseg_uda.registry import HOOKS, MODELS
from uda_utils import uda_model_cfg


# ------------------------------------------------------------ unit: seeds
def test_iteration_seed_repeats_for_the_same_arguments():
    for args in ((0, 0, 0), (1, 5, 3), (2**31 - 1, 160000, 7)):
        assert iteration_seed(*args) == iteration_seed(*args)
        assert 0 <= iteration_seed(*args) < 2**64


def test_iteration_seed_differs_across_iterations_ranks_and_bases():
    seeds = {(b, i, r): iteration_seed(b, i, r)
             for b in (0, 1, 12345) for i in range(400) for r in range(8)}
    assert len(set(seeds.values())) == len(seeds)  # 9,600 distinct seeds
    # pairs on which a linear mix base*1000003 + it*7919 + rank*104729
    # (the previous formula) collides
    assert iteration_seed(0, 104729, 0) != iteration_seed(0, 0, 7919)
    assert iteration_seed(7919, 0, 0) != iteration_seed(0, 1000003, 0)
    # the three arguments are not interchangeable
    assert len({iteration_seed(1, 2, 3), iteration_seed(1, 3, 2),
                iteration_seed(2, 1, 3), iteration_seed(3, 2, 1)}) == 4


def test_iteration_seed_matches_numpy_seed_sequence():
    # the documented construction, recomputed independently
    ss = np.random.SeedSequence(42, spawn_key=(17, 3))
    lo, hi = ss.generate_state(2, dtype=np.uint32)
    assert iteration_seed(42, 17, 3) == int(lo) + (int(hi) << 32)


def test_iteration_seed_rejects_out_of_range_arguments():
    with pytest.raises(ValueError, match='iteration must be in'):
        iteration_seed(0, -1, 0)
    with pytest.raises(ValueError, match='base_seed must be in'):
        iteration_seed(2**32, 0, 0)


def draws():
    return (torch.rand(4).tolist(), np.random.rand(4).tolist(),
            [random.random() for _ in range(4)])


def test_seed_global_rngs_seeds_torch_numpy_and_random():
    seed = iteration_seed(3, 10, 1)
    seed_global_rngs(seed)
    first = draws()
    seed_global_rngs(seed)
    assert draws() == first
    seed_global_rngs(iteration_seed(3, 11, 1))
    other = draws()
    assert all(a != b for a, b in zip(first, other))  # every RNG moved


def test_reseed_uses_base_seed_iteration_and_rank(monkeypatch):
    model = MODELS.build(ConfigDict(uda_model_cfg()))
    model.rng_base_seed.fill_(5)
    model._reseed(7)
    at7 = draws()
    model._reseed(8)
    at8 = draws()
    model._reseed(7)
    assert draws() == at7 and at7 != at8
    # rank 1 of a process group draws something else at the same iteration
    monkeypatch.setattr(uda_segmentor, 'is_distributed', lambda: True)
    monkeypatch.setattr(uda_segmentor.torch_dist, 'get_rank', lambda: 1)
    model._reseed(7)
    assert draws() != at7
    seed_global_rngs(iteration_seed(5, 7, 1))
    rank1 = draws()
    model._reseed(7)
    assert draws() == rank1


# ------------------------------------------------- e2e: resume on a Runner
def tiny_mit_segformer():
    """A two-stage MixVisionTransformer (mmseg's MiT, as in DAFormer) with
    DropPath, attention and MLP dropout, and a SegFormer head with
    dropout: every training forward draws from torch's global RNG."""
    return dict(
        type='EncoderDecoder',
        data_preprocessor=dict(
            type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
            seg_pad_val=255),
        backbone=dict(
            type='MixVisionTransformer', in_channels=3, embed_dims=8,
            num_stages=2, num_layers=[1, 1], num_heads=[1, 2],
            patch_sizes=[7, 3], strides=[4, 2], sr_ratios=[2, 1],
            out_indices=(0, 1), mlp_ratio=2, qkv_bias=True, drop_rate=0.1,
            attn_drop_rate=0.1, drop_path_rate=0.3),
        decode_head=dict(
            type='SegformerHead', in_channels=[8, 16], in_index=[0, 1],
            channels=8, dropout_ratio=0.2, num_classes=NUM_CLASSES,
            norm_cfg=dict(type='BN'), align_corners=False,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False,
                             loss_weight=1.0)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))


@HOOKS.register_module(force=True)
class RecordGlobalRNGHook(Hook):
    """Test-only: a digest of torch's global RNG state when the student's
    backbone starts its forward, per iteration (what DropPath and dropout
    then draw from), and the number of active dropout-like modules."""

    def __init__(self):
        self.digests = {}
        self.active_dropouts = 0

    def before_train(self, runner):
        model = runner.model.module if hasattr(runner.model, 'module') \
            else runner.model
        self.active_dropouts = sum(
            1 for m in model.student.modules() if _is_dropout_like(m) and
            float(getattr(m, 'p', getattr(m, 'drop_prob', 0.0))) > 0)

        def record(module, args):
            if not module.training:
                return  # validation
            self.digests.setdefault(runner.iter, hashlib.sha1(
                torch.get_rng_state().numpy().tobytes()).hexdigest())

        model.student.backbone.register_forward_pre_hook(record)


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('tiny_uda_reseed')
    make_tiny_uda_data(str(root))
    return str(root)


def no_validation(cfg):
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    return cfg


def dropout_cfg(data_root, work_dir):
    cfg = tiny_runner_cfg(data_root, work_dir, max_iters=4,
                          custom_hooks=[dict(type='RecordGlobalRNGHook')])
    no_validation(cfg)
    cfg.model.segmentor = tiny_mit_segformer()
    cfg.train_dataloader.num_workers = 2
    cfg.log_level = 'ERROR'
    return cfg


def recorder(runner):
    return next(h for h in runner.hooks
                if isinstance(h, RecordGlobalRNGHook))


def uninterrupted_and_resumed(cfg, tmp_path, total=4):
    """(state, rng digests) of a ``total``-iteration run and of the same
    run interrupted at ``total/2`` and resumed."""
    half = total // 2
    a = copy.deepcopy(cfg)
    a.work_dir = str(tmp_path / 'uninterrupted')
    run_a = train(a, max_iters=total, experiment_name='a')
    b = copy.deepcopy(cfg)
    b.work_dir = str(tmp_path / 'interrupted')
    b.default_hooks.checkpoint.interval = half
    first = copy.deepcopy(b)
    first.train_cfg.max_iters = half  # same PolyLR length (end=total)
    run_b1 = train(first, experiment_name='b1')
    run_b2 = train(b, resume_from=osp.join(b.work_dir, f'iter_{half}.pth'),
                   experiment_name='b2')
    assert run_b2.iter == total
    digests_b = dict(recorder(run_b1).digests)
    digests_b.update(recorder(run_b2).digests)
    assert sorted(recorder(run_b2).digests) == list(range(half, total))
    assert recorder(run_a).active_dropouts >= 4
    return (full_state(run_a), recorder(run_a).digests,
            full_state(run_b2), digests_b)


def differing_keys(state_a, state_b):
    assert set(state_a) == set(state_b)
    return [k for k in state_a if not torch.equal(state_a[k], state_b[k])]


def test_resume_with_dropout_droppath_and_workers_is_exact(
        data_root, tmp_path):
    cfg = dropout_cfg(data_root, str(tmp_path))
    state_a, rng_a, state_b, rng_b = uninterrupted_and_resumed(cfg, tmp_path)
    assert differing_keys(state_a, state_b) == []
    assert rng_a == rng_b
    # every iteration draws from a fresh state (a seed that ignored the
    # iteration would repeat the same masks at every iteration)
    assert len(set(rng_a.values())) == len(rng_a) == 4


def test_negative_control_without_reseeding_resume_diverges(
        data_root, tmp_path, monkeypatch):
    monkeypatch.setattr(UDASegmentor, '_reseed', lambda self, it: None)
    cfg = dropout_cfg(data_root, str(tmp_path))
    cfg.train_cfg.max_iters = 2
    state_a, rng_a, state_b, rng_b = uninterrupted_and_resumed(
        cfg, tmp_path, total=2)
    assert rng_a[1] != rng_b[1]  # the resumed run draws other masks ...
    diff = differing_keys(state_a, state_b)
    assert any(k.startswith('model.student.') for k in diff)  # ... and
    # ends with other weights


def test_negative_control_seed_ignoring_iteration_repeats_draws(
        data_root, tmp_path, monkeypatch):
    real = uda_segmentor.iteration_seed
    monkeypatch.setattr(uda_segmentor, 'iteration_seed',
                        lambda base, it, rank: real(base, 0, rank))
    cfg = dropout_cfg(data_root, str(tmp_path))
    cfg.train_cfg.max_iters = 2
    runner = train(cfg, experiment_name='same_seed')
    digests = recorder(runner).digests
    # the check of the resume test above would fail
    assert len(digests) == 2 and len(set(digests.values())) == 1


# --------------------------------------------- load_from vs resume: seeds
SELF_TRAINING = dict(type='SelfTraining', pseudo_weight_ignore_top=2,
                     pseudo_weight_ignore_bottom=4,
                     imnet_feature_dist_lambda=0.0)  # seed=None: drawn


@HOOKS.register_module(force=True)
class RecordSeedBuffersHook(Hook):
    """Test-only: the seed buffers before and after each iteration's
    step, and at the end of training."""

    def __init__(self):
        self.before = {}
        self.after = {}
        self.after_train_seeds = None

    @staticmethod
    def seeds(runner):
        model = runner.model.module if hasattr(runner.model, 'module') \
            else runner.model
        return dict(base=int(model.rng_base_seed),
                    st=int(model.methods[0].rng_seed))

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.before[runner.iter] = self.seeds(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.after[runner.iter] = self.seeds(runner)

    def after_train(self, runner):
        self.after_train_seeds = self.seeds(runner)


def seed_cfg(data_root, work_dir, seed):
    cfg = tiny_runner_cfg(
        data_root, work_dir, max_iters=2, with_bn=True,
        methods=[SELF_TRAINING],
        custom_hooks=[dict(type='EMATeacherHook', alpha=0.99),
                      dict(type='RecordSeedBuffersHook')])
    cfg.randomness = dict(seed=seed)
    cfg.log_level = 'ERROR'
    return no_validation(cfg)


def seed_recorder(runner):
    return next(h for h in runner.hooks
                if isinstance(h, RecordSeedBuffersHook))


def test_load_from_gets_its_own_seeds_resume_keeps_the_checkpoints(
        data_root, tmp_path):
    old = train(seed_cfg(data_root, str(tmp_path / 'old'), seed=0))
    old_seeds = seed_recorder(old).after_train_seeds
    assert old_seeds['base'] == 0  # randomness.seed of the old run
    ckpt = str(tmp_path / 'old' / 'iter_2.pth')

    # fine-tuning: load_from, resume=False, another randomness seed
    cfg = seed_cfg(data_root, str(tmp_path / 'finetune'), seed=1)
    cfg.load_from = ckpt
    runner = Runner.from_cfg(cfg)
    own = RecordSeedBuffersHook.seeds(runner)  # before the load
    assert own['base'] == 1
    assert own['st'] != old_seeds['st'] and own['base'] != old_seeds['base']
    runner.train()
    rec = seed_recorder(runner)
    # the weights came from the checkpoint (teacher already initialised)
    assert int(runner.model.teacher_initialized) == 1
    # loaded as they are; the first iteration (seeded after the swap) and
    # every later one use this run's own seeds
    assert rec.before[0] == old_seeds
    assert rec.after[0] == rec.after[1] == rec.after_train_seeds == own

    # resume (another randomness seed in the cfg): the checkpoint's seeds
    cfg = seed_cfg(data_root, str(tmp_path / 'resume'), seed=1)
    cfg.train_cfg.max_iters = 3
    runner = train(cfg, resume_from=ckpt)
    rec = seed_recorder(runner)
    assert sorted(rec.before) == [2]
    assert rec.before[2] == rec.after[2] == old_seeds
    assert rec.after_train_seeds == old_seeds


def test_direct_load_state_dict_keeps_seeds_until_a_fresh_run_starts():
    def build(seed):
        torch.manual_seed(seed)
        return MODELS.build(ConfigDict(uda_model_cfg([SELF_TRAINING])))

    def seeds(model):
        return int(model.rng_base_seed), int(model.methods[0].rng_seed)

    src = build(3)
    hub = MessageHub.get_current_instance()
    try:
        for start_iter in (5, 0):
            dst = build(4)
            own = seeds(dst)
            assert own[0] == 4 and own != seeds(src)
            dst.load_state_dict(src.state_dict())
            assert seeds(dst) == seeds(src)  # a faithful load
            hub.update_info('iter', start_iter)
            dst._settle_loaded_seeds()  # what the first train_step does
            # a run resuming at 5 keeps them, a run from 0 takes its own
            assert seeds(dst) == (seeds(src) if start_iter else own)
    finally:
        hub.update_info('iter', 0)
