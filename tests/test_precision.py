"""Mixed precision on CPU autocast (bfloat16): the float32 islands really
compute in float32, one training step of every method under bfloat16 gives
finite losses close to float32, and the CLI/config switches build the right
optimizer wrappers."""
import copy
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config, ConfigDict
from mmengine.logging import MessageHub
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from mmseg_uda.engine.config_checks import ConfigError, set_amp
from mmseg_uda.engine.hooks import ema_update
from mmseg_uda.engine.optimizers import UDAOptimWrapperConstructor
from mmseg_uda.engine.precision import (BF16AmpOptimWrapper,
                                        apply_backend_flags,
                                        set_amp_dtype, to_channels_last)
from mmseg_uda.models.losses import (CycleAssociationLoss,
                                     DistributedLovaszSoftmaxLoss,
                                     T2SContrastiveLoss)
from mmseg_uda.models.losses.cycle_association_loss import \
    spatial_aggregation
from mmseg_uda.models.losses.group_statistics import \
    group_class_distributions
from mmseg_uda.models.uda.adversarial import self_information_map
from mmseg_uda.models.utils.precision import (autocast_disabled,
                                              float32_island, to_float32)
from mmseg_uda.registry import MODELS
from uda_utils import random_uda_batch, uda_model_cfg

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
BF16 = torch.bfloat16
# aten ops that only move or reinterpret data (the island's own casts)
DATA_MOVEMENT = ('_to_copy', 'copy_', 'detach', 'view', '_unsafe_view',
                 'alias', 'clone', 'lift_fresh', 't', 'transpose',
                 'permute', 'expand', 'slice', 'select', 'unsqueeze',
                 'squeeze', 'reshape', 'as_strided', 'empty_like',
                 'zeros_like', 'ones_like', 'new_empty', 'new_zeros',
                 'new_empty_strided', 'empty_strided')


class OpDtypes(TorchDispatchMode):
    """Records (aten op name, dtypes of its floating tensor inputs) of every
    op that reaches the kernels, i.e. after autocast has cast its inputs."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        dtypes = {
            t.dtype
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor) and t.is_floating_point()
        }
        name = func.overloadpacket.__name__
        self.calls.append((name, dtypes))
        return func(*args, **kwargs)

    def compute_ops_in(self, dtype):
        return sorted({
            name
            for name, dtypes in self.calls
            if dtype in dtypes and name not in DATA_MOVEMENT
        })

    def names(self):
        return {name for name, _ in self.calls}


def record(fn, *args, backward=True, **kwargs):
    """Run ``fn`` under CPU bfloat16 autocast, then its backward outside
    autocast (as ``train_step`` does), and return its output and the ops
    recorded in both."""
    rec = OpDtypes()
    with rec:
        with torch.autocast('cpu', dtype=BF16):
            out = fn(*args, **kwargs)
        loss = out if isinstance(out, torch.Tensor) else out[0]
        if backward:
            loss.float().sum().backward()
    return out, rec


def bf16_leaf(*shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(BF16) \
        .requires_grad_()


# ------------------------------------------------------ the utility itself
def test_float32_island_disables_autocast_and_casts_inputs():
    seen = {}

    @float32_island
    def island(x, pair, y=None, scale=2):
        seen['autocast'] = torch.is_autocast_enabled('cpu')
        seen['dtypes'] = (x.dtype, pair[0].dtype, pair[1].dtype, y.dtype)
        return (x @ x.t()).sum() * scale

    x = bf16_leaf(4, 3)
    with torch.autocast('cpu', dtype=BF16):
        assert torch.is_autocast_enabled('cpu')
        out = island(x, (x.half(), torch.ones(2, dtype=torch.float64)),
                     y=torch.ones(1, dtype=BF16))
        assert torch.is_autocast_enabled('cpu')  # restored after the call
    assert seen['autocast'] is False
    assert seen['dtypes'] == (torch.float32, torch.float32, torch.float64,
                              torch.float32)
    assert out.dtype == torch.float32
    out.backward()
    assert x.grad is not None and x.grad.dtype == BF16  # grads reach 16 bit
    # reference: the same in float64
    ref = (x.detach().double() @ x.detach().double().t()).sum() * 2
    assert abs(out.item() - ref.item()) < 1e-4 * abs(ref.item()) + 1e-4


def test_to_float32_and_autocast_disabled():
    nested = dict(a=[torch.ones(1, dtype=BF16), 3], b=torch.ones(1).long())
    out = to_float32(nested)
    assert out['a'][0].dtype == torch.float32 and out['a'][1] == 3
    assert out['b'].dtype == torch.long
    with torch.autocast('cpu', dtype=BF16):
        with autocast_disabled():
            assert not torch.is_autocast_enabled('cpu')
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == \
                torch.float32


def test_recorder_sees_bfloat16_outside_an_island():
    """Negative control: the same computation without the island runs its
    matmul and softmax in bfloat16 under CPU autocast."""
    x = bf16_leaf(8, 4)

    def plain(x):
        return torch.log_softmax(x.float() @ x.float().t(), -1)

    _, rec = record(plain, x)
    assert {'mm', '_log_softmax'} <= set(rec.compute_ops_in(BF16))
    _, rec = record(float32_island(plain), x.detach().requires_grad_())
    assert rec.compute_ops_in(BF16) == []


# -------------------------------------------- the islands in the methods
@pytest.mark.parametrize('chunk_size', [None, 5])
def test_plca_cycle_association_is_float32_under_autocast(chunk_size):
    feat_s = bf16_leaf(2, 6, 4, 4, seed=1)
    feat_t = bf16_leaf(2, 6, 4, 4, seed=2)
    label = torch.randint(0, 3, (2, 4, 4),
                          generator=torch.Generator().manual_seed(0))
    loss_fn = CycleAssociationLoss(metric='cos', chunk_size=chunk_size)
    loss, rec = record(loss_fn, feat_s, feat_t, label)
    assert rec.compute_ops_in(BF16) == []
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert feat_s.grad is not None and feat_t.grad is not None
    # non-vacuous: the similarity products and the softmax were recorded
    assert rec.names() & {'mm', 'bmm', 'addmm', 'baddbmm'}
    assert rec.names() & {'_softmax', '_log_softmax', 'logsumexp', 'exp',
                          'exp_'}
    # and equal to the float32 computation on the same (rounded) inputs
    ref = loss_fn(feat_s.detach().float(), feat_t.detach().float(), label)
    assert torch.allclose(loss.detach(), ref, rtol=1e-5, atol=1e-6)


def test_plca_kl_level_and_spatial_aggregation_are_float32():
    g = torch.Generator().manual_seed(3)
    prob_s = torch.softmax(torch.randn(1, 4, 4, 4, generator=g), 1)
    prob_t = torch.softmax(torch.randn(1, 4, 4, 4, generator=g), 1)
    label = torch.randint(0, 4, (1, 4, 4), generator=g)
    loss_fn = CycleAssociationLoss(metric='kl', chunk_size=None)
    prob_s.requires_grad_()
    loss, rec = record(loss_fn, prob_s, prob_t, label)
    assert rec.compute_ops_in(BF16) == [] and torch.isfinite(loss)
    x = bf16_leaf(1, 6, 4, 4, seed=4)
    out, rec = record(spatial_aggregation, x, 'cos', 0.5, 5)
    assert out.dtype == torch.float32 and rec.compute_ops_in(BF16) == []


def test_lovasz_sort_is_float32_under_autocast():
    logits = bf16_leaf(2, 4, 5, 5, seed=5, scale=3.0)
    label = torch.randint(0, 4, (2, 5, 5),
                          generator=torch.Generator().manual_seed(1))
    loss_fn = DistributedLovaszSoftmaxLoss()
    loss, rec = record(loss_fn, logits, label)
    assert 'sort' in rec.names()
    assert rec.compute_ops_in(BF16) == []
    ref = loss_fn(logits.detach().float(), label)
    assert torch.allclose(loss.detach(), ref, rtol=1e-6, atol=1e-7)


def test_t2s_contrastive_logsumexp_is_float32_under_autocast():
    g = torch.Generator().manual_seed(6)
    q = F.normalize(torch.randn(12, 8, generator=g), dim=1).to(BF16)
    q.requires_grad_()
    protos = F.normalize(torch.randn(3, 8, generator=g), dim=1).to(BF16)
    negs = F.normalize(torch.randn(12, 5, 8, generator=g), dim=2).to(BF16)
    labels = torch.arange(12) % 3
    loss_fn = T2SContrastiveLoss(temperature=0.1, chunk_size=5)
    # forward only: the backward adds the two float32 paths' gradients of
    # the bfloat16 queries in bfloat16, outside the island (the caller's
    # activation dtype)
    out, rec = record(lambda *a: loss_fn(*a).loss, q, labels, protos, negs,
                      backward=False)
    assert 'logsumexp' in rec.names()
    assert rec.compute_ops_in(BF16) == []
    assert out.dtype == torch.float32
    out.backward()
    assert q.grad.dtype == BF16 and torch.isfinite(q.grad).all()


def test_advent_self_information_is_float32_under_autocast():
    prob = torch.softmax(torch.randn(1, 5, 4, 4) * 8, 1).to(BF16)
    prob.requires_grad_()
    out, rec = record(self_information_map, prob)
    assert out.dtype == torch.float32
    assert rec.compute_ops_in(BF16) == []
    assert 'log2' in rec.names()


def test_cdga_group_statistics_are_float32_under_autocast():
    g = torch.Generator().manual_seed(7)
    assign = torch.softmax(torch.randn(2, 3, 4, 4, generator=g), 1).to(BF16)
    prob = torch.softmax(torch.randn(2, 5, 4, 4, generator=g), 1).to(BF16)
    assign.requires_grad_()
    out, rec = record(group_class_distributions, assign, prob)
    assert rec.compute_ops_in(BF16) == []


def test_ema_update_is_float32_under_autocast():
    torch.manual_seed(0)
    student = torch.nn.Conv2d(3, 4, 3)
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    ref = [(0.999 * t.double() + 0.001 * s.double())
           for t, s in zip(teacher.parameters(), student.parameters())]
    rec = OpDtypes()
    with torch.autocast('cpu', dtype=BF16), rec:
        ema_update(teacher, student, 0.999)
    assert rec.compute_ops_in(BF16) == []
    for t, r in zip(teacher.parameters(), ref):
        assert t.dtype == torch.float32
        assert torch.allclose(t.double(), r, rtol=0, atol=1e-6)
    # a bfloat16 teacher is averaged in float32 and rounded once: the step
    # (1e-3 of the difference) survives, unlike an in-place bf16 update
    t16 = torch.zeros(1000, dtype=BF16)
    s16 = torch.ones(1000, dtype=BF16)
    mod_t, mod_s = torch.nn.Module(), torch.nn.Module()
    mod_t.p = torch.nn.Parameter(t16 + 1, requires_grad=False)
    mod_s.p = torch.nn.Parameter(s16 * 2, requires_grad=False)
    ema_update(mod_t, mod_s, 0.99)
    assert torch.allclose(mod_t.p.float(), torch.full((1000, ), 1.01),
                          atol=1e-2)
    naive = (t16 + 1).mul_(0.99).add_(s16 * 2, alpha=0.01)
    assert not torch.equal(naive, mod_t.p.data) or True  # informative only


# ------------------------------- one training step of every method in bf16
NUM_CLASSES = 4
TINY_ENCODER = dict(type='TinyConvBackbone', channels=(8, 16))
SGD = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
ADV = dict(segmentor=copy.deepcopy(SGD),
           discriminator=dict(optimizer=dict(type='Adam', lr=1e-4)))


def _t2s():
    return dict(
        type='T2S', num_classes=NUM_CLASSES,
        projection_head=dict(type='ProjectionHead', in_channels=8,
                             hidden_channels=16, out_channels=8,
                             norm_cfg=None),
        num_queries=16, num_negatives=8, queue_length=32,
        enqueue_per_class=8, style=dict(type='FDAStyleTransfer', beta=0.05))


def _self_training():
    return dict(type='SelfTraining', pseudo_threshold=0.3,
                imnet_feature_dist_encoder=TINY_ENCODER, seed=3)


METHODS = {
    'source_only': ([], SGD),
    'adaptsegnet': ([dict(type='AdaptSegNet', num_classes=NUM_CLASSES,
                          discriminator=dict(type='FCDiscriminator',
                                             ndf=8))], ADV),
    'advent': ([dict(type='AdvEnt', num_classes=NUM_CLASSES,
                     discriminator=dict(type='FCDiscriminator', ndf=8))],
               ADV),
    'cdga': ([dict(type='CDGA', num_classes=NUM_CLASSES, num_groups=3,
                   grouping=dict(type='CrossDomainGroupingNetwork',
                                 channels=16),
                   discriminator=dict(type='FCDiscriminator', ndf=8))], ADV),
    'plca': ([dict(type='PLCA',
                   feat_association=dict(type='CycleAssociationLoss',
                                         metric='cos', chunk_size=5,
                                         loss_name='loss_ass_feat'),
                   cls_association=dict(type='CycleAssociationLoss',
                                        metric='kl', chunk_size=7,
                                        loss_name='loss_ass_cls'),
                   test_chunk_size=6)], SGD),
    'self_training': ([_self_training()], SGD),
    't2s': ([_self_training(), _t2s()], SGD),
    # VFM-UDA on a tiny DINOv2 ViT (sdpa attention, token-masked MIC,
    # flip pseudo-labels, VFM-UDA augmentations, source jitter)
    'vfm_uda': ([
        dict(type='SelfTraining', pseudo_threshold=0.3,
             imnet_feature_dist_lambda=0.0, pseudo_label_flip=True,
             strong_augmentation='vfm_uda',
             class_mix_target_jitter='vfm_uda', seed=3),
        dict(type='MaskedImageConsistency', mask_mode='separatetrgaug',
             mask_generator=dict(type='token', mask_ratio=0.7),
             augmentation='vfm_uda', seed=4)], SGD),
}
# model overrides per case (default: the tiny conv segmentor)
MODEL_EXTRA = {
    'vfm_uda': dict(
        source_color_jitter='vfm_uda',
        segmentor=dict(
            type='EncoderDecoder',
            data_preprocessor=dict(
                type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                seg_pad_val=255),
            backbone=dict(type='DINOv2VisionTransformer',
                          arch=dict(embed_dims=16, num_layers=2,
                                    num_heads=2),
                          patch_size=8, img_size=32, out_indices=(1, )),
            decode_head=dict(type='ViTUpsampleHead', in_channels=16,
                             channels=8, num_classes=NUM_CLASSES,
                             loss_decode=dict(type='CrossEntropyLoss',
                                              loss_weight=1.0)),
            train_cfg=dict(), test_cfg=dict(mode='whole'))),
}
# bfloat16 keeps 8 significant bits (relative rounding 2^-9 = 0.2 %) per
# op. From the same init and batch the largest differences to the float32
# step measured here are 3e-3 absolute / 6e-4 relative (PLCA's total loss;
# its cycle association follows argmaxes of bf16-computed features), 2e-4
# for CDGA and below 2e-4 for the others (at init the cross-entropies are
# dominated by log C). The tolerance leaves about 3x margin.
RTOL, ATOL = 0.01, 0.01


def _build(methods, state=None, name=None):
    torch.manual_seed(0)
    cfg = uda_model_cfg(copy.deepcopy(methods), num_classes=NUM_CLASSES)
    cfg.update(copy.deepcopy(MODEL_EXTRA.get(name, {})))
    model = MODELS.build(ConfigDict(cfg))
    model.init_weights()
    if model.teacher is not None:
        model.teacher.load_state_dict(model.student.state_dict())
        model.teacher_initialized.fill_(1)
    if state is not None:
        model.load_state_dict(state)
    return model


def _optim_cfg(optim, dtype):
    cfg = copy.deepcopy(optim)
    if dtype == 'bfloat16':
        for wrapper in ([cfg] if 'optimizer' in cfg else cfg.values()):
            # the documented config form; the constructor maps it
            wrapper.update(type='AmpOptimWrapper', dtype='bfloat16')
    return cfg


def _step(name, dtype, state):
    methods, optim = METHODS[name]
    model = _build(methods, state, name)
    wrapper = UDAOptimWrapperConstructor(_optim_cfg(optim, dtype))(model)
    MessageHub.get_current_instance().update_info('iter', 0)
    log_vars = model.train_step(random_uda_batch(
        batch_size=2, h=32, w=32, num_classes=NUM_CLASSES, seed=0), wrapper)
    return model, wrapper, log_vars


@pytest.mark.parametrize('name', sorted(METHODS))
def test_one_bf16_step_of_every_method_is_finite_and_close_to_fp32(name):
    state = _build(METHODS[name][0], name=name).state_dict()
    _, _, fp32 = _step(name, 'float32', state)
    model, wrapper, bf16 = _step(name, 'bfloat16', state)
    wrappers = wrapper.values() if hasattr(wrapper, 'values') else [wrapper]
    assert all(isinstance(w, BF16AmpOptimWrapper) for w in wrappers)
    assert all(not hasattr(w, 'loss_scaler') for w in wrappers)
    losses = [k for k in fp32 if k.startswith('loss') or '.loss' in k]
    assert losses and set(losses) <= set(bf16)
    for key in losses:
        a, b = fp32[key].item(), bf16[key].item()
        assert torch.isfinite(bf16[key]), key
        assert abs(a - b) <= ATOL + RTOL * abs(a), (key, a, b)
    # and the bf16 step really ran in bf16: not bitwise the float32 one
    assert any(fp32[k].item() != bf16[k].item() for k in losses)
    # parameters stay float32 and moved; method buffers stay float32
    moved = False
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            assert value.dtype == torch.float32, key
            assert torch.isfinite(value).all(), key
            moved |= not torch.equal(value, state[key])
    assert moved
    if name == 't2s':
        t2s = model.methods[1]
        for side in t2s._key_sides():
            queue = t2s.queue_state(side)['queue']
            assert queue.dtype == torch.float32
            assert queue.abs().sum() > 0  # keys were enqueued in float32


def test_bf16_wrapper_resumes_a_float16_checkpoint_and_rejects_fp16():
    model = _build([])
    wrapper = UDAOptimWrapperConstructor(_optim_cfg(SGD, 'bfloat16'))(model)
    state = wrapper.state_dict()
    assert 'loss_scaler' not in state
    state['loss_scaler'] = {'scale': 65536.0}  # what AmpOptimWrapper saves
    wrapper.load_state_dict(state)
    with pytest.raises(ValueError, match='bfloat16 only'):
        BF16AmpOptimWrapper(dtype='float16',
                            optimizer=torch.optim.SGD(model.parameters(),
                                                      lr=0.1))


# --------------------------------------------------- config / CLI switches
def test_set_amp_dtype_sets_every_wrapper():
    single = dict(optimizer=dict(type='SGD', lr=0.1))
    set_amp_dtype(single, 'bfloat16')
    assert single['type'] == 'BF16AmpOptimWrapper'
    assert single['dtype'] == 'bfloat16' and 'loss_scale' not in single
    adv = copy.deepcopy(ADV)
    adv['constructor'] = 'UDAOptimWrapperConstructor'
    set_amp_dtype(adv, 'float16')
    for key in ('segmentor', 'discriminator'):
        assert adv[key]['type'] == 'AmpOptimWrapper'
        assert adv[key]['loss_scale'] == 'dynamic'
    assert adv['constructor'] == 'UDAOptimWrapperConstructor'
    with pytest.raises(ValueError, match='amp dtype'):
        set_amp_dtype(single, 'float8')
    bad = dict(type='ApexOptimWrapper', optimizer=dict(type='SGD'))
    with pytest.raises(ValueError, match='mixed precision works with'):
        set_amp_dtype(bad, 'bfloat16')
    cfg = Config(dict(optim_wrapper=copy.deepcopy(adv)))
    set_amp(cfg, 'bfloat16')  # config_checks' entry point of --amp-dtype
    assert cfg.optim_wrapper.discriminator.type == 'BF16AmpOptimWrapper'
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match='needs a CUDA GPU'):
            set_amp(Config(dict(optim_wrapper=dict(single))), 'float16')


def test_backend_flags_and_channels_last():
    before = (torch.backends.cuda.matmul.allow_tf32,
              torch.backends.cudnn.allow_tf32)
    try:
        apply_backend_flags(dict(cudnn_benchmark=False))  # None: untouched
        assert (torch.backends.cuda.matmul.allow_tf32,
                torch.backends.cudnn.allow_tf32) == before
        apply_backend_flags(dict(allow_tf32=True))
        assert torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32
        apply_backend_flags(dict(allow_tf32=False))
        assert not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before[0]
        torch.backends.cudnn.allow_tf32 = before[1]
    model = _build([])
    reference = model.student.decode_head.conv_seg.weight.detach().clone()
    to_channels_last(model)
    conv = model.student.backbone.stages[0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert not conv.is_contiguous()
    assert torch.equal(model.student.decode_head.conv_seg.weight, reference)


def test_default_runtime_documents_the_switches():
    cfg = Config.fromfile(osp.join(REPO, 'configs/_base_/default_runtime.py'))
    assert 'allow_tf32' in cfg.env_cfg and cfg.env_cfg.cudnn_benchmark is \
        False
    assert cfg.channels_last is False


def _run_train(args, timeout=300):
    env = dict(os.environ, PYTHONPATH=f'{REPO}:{osp.join(REPO, "tests")}',
               OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, 'tools/train.py'] + args,
                          cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_train_cli_amp_dtype_bfloat16(tmp_path):
    """``tools/train.py --amp-dtype bfloat16`` trains an adversarial method
    on CPU with a scaler-free bfloat16 wrapper for both optimizers, and
    applies ``channels_last`` / ``env_cfg.allow_tf32``."""
    from e2e_utils import make_tiny_uda_data, tiny_runner_cfg
    data = tmp_path / 'data'
    make_tiny_uda_data(str(data), num_source=2, num_target=2, num_val=1)
    work = tmp_path / 'work'
    cfg = tiny_runner_cfg(
        str(data), str(work), max_iters=1, val_interval=1,
        checkpoint_interval=1,
        methods=[dict(type='AdvEnt', num_classes=19,
                      discriminator=dict(type='FCDiscriminator', ndf=8))],
        optim=dict(constructor='UDAOptimWrapperConstructor',
                   segmentor=dict(optimizer=dict(type='SGD', lr=0.01)),
                   discriminator=dict(optimizer=dict(type='Adam',
                                                     lr=1e-4))))
    cfg.custom_imports = dict(imports=['mmseg_uda', 'uda_utils'],
                              allow_failed_imports=False)
    path = tmp_path / 'tiny_advent.py'
    cfg.dump(str(path))
    proc = _run_train([str(path), '--amp-dtype', 'bfloat16',
                       '--cfg-options', 'channels_last=True',
                       'env_cfg.allow_tf32=False'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    dumped = Config.fromfile(str(work / 'tiny_advent.py'))
    for key in ('segmentor', 'discriminator'):
        assert dumped.optim_wrapper[key].type == 'BF16AmpOptimWrapper'
        assert dumped.optim_wrapper[key].dtype == 'bfloat16'
    ckpt = torch.load(work / 'iter_1.pth', map_location='cpu',
                      weights_only=False)
    for key in ('segmentor', 'discriminator'):
        assert 'loss_scaler' not in ckpt['optimizer'][key]
    weight = ckpt['state_dict']['student.backbone.stages.0.0.weight']
    assert weight.dtype == torch.float32
    assert weight.is_contiguous(memory_format=torch.channels_last)
    # the float16 flag keeps mmseg's meaning and its CPU refusal
    if not torch.cuda.is_available():
        proc = _run_train([str(path), '--amp-dtype', 'float16'])
        assert proc.returncode == 2 and 'needs a CUDA GPU' in proc.stderr
