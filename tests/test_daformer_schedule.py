"""DAFormer's optimisation in mmengine terms
(configs/_base_/schedules/adamw_poly10warm_40k.py): the learning-rate curve
equals mmcv 1.x's poly + linear warm-up formula, and the parameter groups
equal DAFormer's paramwise rules on its MiT naming."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.optim import OptimWrapper
from torch import nn

import mmseg_uda.models.decode_heads.daformer_head  # noqa: F401
import mmseg_uda.models.uda.self_training  # noqa: F401
from mmseg_uda.engine.optimizers import UDAOptimWrapperConstructor
from mmseg_uda.registry import MODELS, PARAM_SCHEDULERS

CONFIG = osp.join(
    osp.dirname(__file__), '..', 'configs', '_base_', 'schedules',
    'adamw_poly10warm_40k.py')
BASE_LR = 6e-5
CHECK_ITERS = (0, 1, 749, 1499, 1500, 20000, 39999)


def mmcv_poly_warmup_lr(base, t, max_iters=40000, power=1.0,
                        warmup_iters=1500, warmup_ratio=1e-6):
    """mmcv 1.x PolyLrUpdaterHook(warmup='linear', by_epoch=False):
    regular = base·(1 − t/T)^p; for t < W, regular·(1 − k) with
    k = (1 − t/W)(1 − r)."""
    regular = base * (1 - t / max_iters)**power
    if t >= warmup_iters:
        return regular
    k = (1 - t / warmup_iters) * (1 - warmup_ratio)
    return regular * (1 - k)


def scheduled_lrs(scheduler_cfgs, base_lrs, iters):
    """Learning rates at the start of each iteration in ``iters``, with the
    schedulers built as the Runner builds them and stepped after every
    iteration as ParamSchedulerHook.after_train_iter does."""
    params = [nn.Parameter(torch.zeros(1)) for _ in base_lrs]
    optimizer = torch.optim.AdamW(
        [dict(params=[p], lr=lr) for p, lr in zip(params, base_lrs)])
    wrapper = OptimWrapper(optimizer)
    schedulers = [
        PARAM_SCHEDULERS.build(copy.deepcopy(cfg),
                               default_args=dict(optimizer=wrapper))
        for cfg in scheduler_cfgs
    ]
    found = {}
    for t in range(max(iters) + 1):
        if t in iters:
            found[t] = [g['lr'] for g in optimizer.param_groups]
        optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
    return found


def test_lr_curve_equals_mmcv_poly_with_linear_warmup():
    cfg = Config.fromfile(CONFIG)
    assert cfg.train_cfg.max_iters == 40000
    assert cfg.optim_wrapper.optimizer.lr == BASE_LR
    base_lrs = (BASE_LR, 10 * BASE_LR)  # backbone, head (lr_mult 10)
    found = scheduled_lrs(cfg.param_scheduler, base_lrs, CHECK_ITERS)
    for t in CHECK_ITERS:
        for lr, base in zip(found[t], base_lrs):
            assert lr == pytest.approx(mmcv_poly_warmup_lr(base, t),
                                       rel=1e-9, abs=1e-18), t
    # spot values: lr(0) = base·1e-6, lr(1500) = base·(1 − 1500/40000)
    assert found[0][0] == pytest.approx(BASE_LR * 1e-6)
    assert found[1500][0] == pytest.approx(BASE_LR * 0.9625)
    assert found[39999][0] == pytest.approx(BASE_LR / 40000)


def test_naive_mmengine_chain_differs_from_mmcv():
    """The usual translation (LinearLR to 1500, PolyLR from 1500 to 40000)
    restarts the decay and misses DAFormer's curve."""
    naive = [
        dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
             end=1500),
        dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False,
             begin=1500, end=40000),
    ]
    found = scheduled_lrs(naive, (BASE_LR, ), (1499, 20000))
    assert found[20000][0] != pytest.approx(
        mmcv_poly_warmup_lr(BASE_LR, 20000), rel=1e-3)


def tiny_mit_daformer_uda():
    backbone = dict(
        type='MixVisionTransformer', in_channels=3, embed_dims=8,
        num_stages=4, num_layers=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
        patch_sizes=[7, 3, 3, 3], sr_ratios=[8, 4, 2, 1],
        out_indices=(0, 1, 2, 3), mlp_ratio=2, qkv_bias=True,
        drop_path_rate=0.1)
    segmentor = dict(
        type='EncoderDecoder',
        data_preprocessor=dict(
            type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
            seg_pad_val=255),
        backbone=backbone,
        decode_head=dict(
            type='DAFormerHead', in_channels=[8, 16, 40, 64],
            in_index=[0, 1, 2, 3], channels=16, embed_dims=8,
            dropout_ratio=0.1, num_classes=19,
            norm_cfg=dict(type='BN', requires_grad=True),
            align_corners=False),
        train_cfg=dict(), test_cfg=dict(mode='whole'))
    return MODELS.build(
        ConfigDict(type='UDASegmentor', segmentor=segmentor, methods=[
            dict(type='SelfTraining', imnet_feature_dist_encoder=backbone)
        ]))


def test_param_groups_follow_daformer_rules():
    """DAFormer (mmcv 1.x, its own MiT): 'head' lr x10 (weight decay kept),
    'norm' and 'pos_block' no decay; every MiT LayerNorm has 'norm' in its
    name there (norm1/norm2/attn.norm/patch_embed.norm/stage norm1..4). In
    mmseg 1.x's MiT the stage norms are layers.<i>.2, which
    norm_decay_mult=0 covers. Teacher and frozen encoder are excluded."""
    cfg = Config.fromfile(CONFIG)
    model = tiny_mit_daformer_uda()
    optim_cfg = cfg.optim_wrapper.to_dict()
    optim_cfg.pop('constructor')
    optim = UDAOptimWrapperConstructor(optim_cfg)(model)
    # (mmengine's OptimWrapper appends a dummy 'base_param_settings' group
    # without gradient to track the base lr; it is no model parameter)
    options = {
        id(p): (g['lr'], g['weight_decay'])
        for g in optim.param_groups for p in g['params'] if p.requires_grad
    }
    modules = dict(model.named_modules())
    checked = 0
    for name, param in model.student.named_parameters():
        owner = modules['student.' + name.rsplit('.', 1)[0]]
        is_head = name.startswith('decode_head.')
        lr = BASE_LR * (10 if is_head else 1)
        wd = 0.0 if isinstance(owner, nn.LayerNorm) else 0.01
        assert options[id(param)] == (pytest.approx(lr),
                                      pytest.approx(wd)), name
        checked += 1
    stage_norms = [n for n, m in model.student.backbone.named_modules()
                   if isinstance(m, nn.LayerNorm) and 'norm' not in n]
    assert stage_norms == [f'layers.{i}.2' for i in range(4)]
    assert checked == len(options)
    frozen = list(model.teacher.parameters()) + \
        list(model.methods[0].imnet_encoder.parameters())
    assert not {id(p) for p in frozen} & set(options)
