"""configs/vfm/*, configs/t2s/gta2cs_dinov2_vitl.py and the demo VFM
configs: load, carry the official VFM-UDA values (tue-mps/vfm-uda@e154d8f),
give the official learning-rate schedule, build through the registry and run
one loss on a shallow copy of the network; plus UDASegmentor's
``source_color_jitter`` (VFM-UDA's ``random_aug_weak`` on the source)."""
import copy
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.optim import build_optim_wrapper
from mmengine.registry import PARAM_SCHEDULERS

import mmseg_uda  # noqa: F401
from mmseg_uda.models.uda.context import UDAContext
from mmseg_uda.registry import MODELS
from uda_utils import random_uda_batch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
VFM_CONFIGS = sorted(
    osp.relpath(p, REPO)
    for p in glob.glob(osp.join(REPO, 'configs', 'vfm', '*.py'))) + [
        'configs/t2s/gta2cs_dinov2_vitl.py'
    ]
TINY_VIT = dict(embed_dims=32, num_layers=2, num_heads=2)


def load(rel):
    return Config.fromfile(osp.join(REPO, rel))


def shallow(model_cfg):
    """Random init and a 2-block ViT of width 32 (the head follows)."""
    model_cfg = copy.deepcopy(model_cfg)
    seg = model_cfg.segmentor
    seg.backbone.update(arch=TINY_VIT, init_cfg=None, out_indices=(1, ))
    seg.decode_head.update(in_channels=32, channels=8, mid_channels=16)
    for m in model_cfg.methods:
        if m['type'] == 'T2S':
            m['projection_head'].update(in_channels=8)
            m['style'] = dict(type='FDAStyleTransfer', beta=0.01)
    return model_cfg


def official_lr_factor(t, warmup=1500, total=40000, start=1e-3):
    """models/warmup_and_linear_scheduler.py::WarmupAndLinearScheduler
    (start_warmup_lr=1e-3, base_lr=1, final_lr=0), as written there."""
    schedule = np.concatenate((np.linspace(start, 1, warmup),
                               np.linspace(1, 0, total + 1)[warmup:]))
    return schedule[t]


def test_vfm_uda_recipe_values():
    cfg = load('configs/vfm/gta2cs_dinov2_vitl_mic.py')
    seg = cfg.model.segmentor
    # VITLightweightHead('dinov2_vitl14'), in_img_scale 1.1
    assert seg.backbone.type == 'DINOv2VisionTransformer'
    assert (seg.backbone.arch, seg.backbone.patch_size,
            seg.backbone.img_size) == ('large', 14, 518)
    assert seg.backbone.input_scale == 1.1
    assert seg.backbone.init_cfg.checkpoint == \
        'pretrained/dinov2_vitl14_pretrain.pth'
    assert seg.decode_head.type == 'ViTUpsampleHead'
    assert (seg.decode_head.in_channels, seg.decode_head.channels,
            seg.decode_head.mid_channels) == (1024, 256, 512)
    # slide_inference: 1024 windows, stride 512
    assert seg.test_cfg == dict(mode='slide', crop_size=(1024, 1024),
                                stride=(512, 512))
    # UDAVITGeneric: ema 0.999, threshold 0.968, flip, token ratio 0.7
    st, mic = cfg.model.methods
    assert st.type == 'SelfTraining' and mic.type == \
        'MaskedImageConsistency'
    assert st.pseudo_threshold == 0.968 and st.pseudo_label_flip
    assert st.imnet_feature_dist_lambda == 0.0
    assert (st.strong_augmentation, st.class_mix_target_jitter) == (
        'vfm_uda', 'vfm_uda')
    assert mic.mask_generator == dict(type='token', mask_ratio=0.7)
    assert (mic.mask_mode, mic.augmentation) == ('separatetrgaug',
                                                 'vfm_uda')
    assert cfg.model.source_color_jitter == 'vfm_uda'
    assert cfg.custom_hooks[0] == dict(type='EMATeacherHook', alpha=0.999,
                                       ema_buffers=True)
    assert cfg.randomness.seed == 42  # main.py
    assert cfg.train_cfg.val_interval == 1000  # val_check_interval
    assert seg.decode_head.loss_decode.avg_non_ignore  # F.cross_entropy
    # lr 5e-5 * sqrt(8), encoder x0.1, wd 0.01 on everything
    opt = cfg.optim_wrapper
    assert opt.optimizer.type == 'AdamW'
    assert opt.optimizer.lr == pytest.approx(5e-5 * 8**0.5)
    assert opt.optimizer.weight_decay == 0.01
    assert opt.paramwise_cfg.custom_keys == dict(backbone=dict(lr_mult=0.1))
    assert cfg.train_cfg.max_iters == 40000
    # data: batch 8, 1024 crops, RCS temperature 0.05, min_crop_ratio 2
    loader = cfg.train_dataloader
    assert loader.batch_size == 8
    assert loader.dataset.rare_class_sampling == dict(
        min_pixels=3000, class_temp=0.05, min_crop_ratio=2.0)
    src = {t['type']: t for t in loader.dataset.source.pipeline}
    assert src['RandomResize'].scale[1] == 1440
    assert src['RandomResize'].ratio_range == (0.9, 1.1)
    assert src['RandomCrop'].crop_size == (1024, 1024)
    tgt = {t['type']: t for t in loader.dataset.target.pipeline}
    assert tgt['RandomResize'].scale[1] == 1024
    # 3 % / 25 % / 3 % / 3 % of 1024x2048 (int() as UDATransform)
    assert tgt['GenerateValidPseudoMask'].margins == (
        int(0.03 * 1024), int(0.25 * 1024), int(0.03 * 2048),
        int(0.03 * 2048))


def test_source_only_is_the_supervised_recipe():
    cfg = load('configs/vfm/gta2cs_dinov2_vitl_source_only.py')
    mic = load('configs/vfm/gta2cs_dinov2_vitl_mic.py')
    assert cfg.model.methods == [] and cfg.custom_hooks == []
    # SupervisedVITGeneric: lr_multiplier 0.01, random_aug_weak on source
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys == dict(
        backbone=dict(lr_mult=0.01))
    assert cfg.model.source_color_jitter == 'vfm_uda'
    assert cfg.model.segmentor == mic.model.segmentor
    assert cfg.train_dataloader == mic.train_dataloader
    assert cfg.param_scheduler == mic.param_scheduler
    syn = load('configs/vfm/synthia2cs_dinov2_vitl_mic.py')
    assert syn.train_dataloader.dataset.source.type == 'SynthiaDataset'
    assert syn.model == mic.model
    t2s = load('configs/t2s/gta2cs_dinov2_vitl.py')
    assert [m['type'] for m in t2s.model.methods] == [
        'SelfTraining', 'MaskedImageConsistency', 'T2S']
    # the projection head reads the head's 256-channel feature
    assert t2s.model.methods[2].projection_head.in_channels == \
        t2s.model.segmentor.decode_head.channels


def test_schedule_equals_official_warmup_and_linear():
    cfg = load('configs/vfm/gta2cs_dinov2_vitl_mic.py')
    param = torch.nn.Parameter(torch.zeros(1))
    optim = build_optim_wrapper(
        torch.nn.Linear(1, 1), dict(type='OptimWrapper', optimizer=dict(
            cfg.optim_wrapper.optimizer))).optimizer
    optim.param_groups[0]['params'] = [param]
    schedulers = [
        PARAM_SCHEDULERS.build(dict(s, optimizer=optim))
        for s in cfg.param_scheduler
    ]
    base = cfg.optim_wrapper.optimizer.lr
    checks = {0, 1, 2, 749, 1498, 1499, 1500, 1501, 20000, 39998, 39999,
              40000}
    for t in range(40001):
        if t in checks:
            want = base * official_lr_factor(t)
            assert optim.param_groups[0]['lr'] == pytest.approx(
                want, rel=1e-6, abs=1e-12), t
        for s in schedulers:
            s.step()


@pytest.mark.parametrize('rel', VFM_CONFIGS)
def test_vfm_config_builds_and_runs_a_loss(rel):
    cfg = load(rel)
    model_cfg = shallow(cfg.model)
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    if model.teacher is not None:
        model.teacher.load_state_dict(model.student.state_dict())
        model.teacher_initialized.fill_(1)
    batch = random_uda_batch(batch_size=2, h=56, w=56, num_classes=19)
    MessageHub.get_current_instance().update_info('iter', 0)
    data = model.data_preprocessor(batch, True)
    losses = model.loss(data['inputs'], data['data_samples'])
    assert torch.isfinite(losses['src.loss_ce'])
    if cfg.model.methods:
        assert torch.isfinite(losses['mic.loss_masked'])
        assert torch.isfinite(losses['selftraining.loss_mix'])
    if 't2s' in rel:
        assert torch.isfinite(losses['t2s.loss_t2s'])


def test_source_color_jitter_only_changes_the_students_source_input():
    cfg = load('configs/vfm/gta2cs_dinov2_vitl_source_only.py')
    model_cfg = shallow(cfg.model)
    model = MODELS.build(model_cfg)
    batch = random_uda_batch(batch_size=4, h=28, w=28, num_classes=19)
    data = model.data_preprocessor(batch, True)
    ctx = UDAContext(model, data['inputs'], data['data_samples'], 3)
    original = ctx.inputs['source'].clone()
    jittered = model._student_input(ctx, 'source')
    assert torch.equal(ctx.inputs['source'], original)  # methods' view
    assert torch.equal(model._student_input(ctx, 'target'),
                       ctx.inputs['target'])
    changed = [not torch.equal(a, b) for a, b in zip(jittered, original)]
    assert any(changed)
    # the same iteration draws the same jitter; another iteration differs
    assert torch.equal(model._student_input(ctx, 'source'), jittered)
    ctx4 = UDAContext(model, data['inputs'], data['data_samples'], 4)
    assert not torch.equal(model._student_input(ctx4, 'source'), jittered)
    # negative control: without the option the source is untouched
    model.source_color_jitter = None
    assert torch.equal(model._student_input(ctx, 'source'), original)


def test_source_color_jitter_bad_config():
    cfg = load('configs/vfm/gta2cs_dinov2_vitl_source_only.py')
    model_cfg = shallow(cfg.model)
    model_cfg.source_color_jitter = dict(brightness=0.1, p=0.9)
    with pytest.raises(ValueError, match='source_color_jitter'):
        MODELS.build(model_cfg)


def test_demo_vfm_configs():
    so = load('configs/demo/vfm_source_only.py')
    mic = load('configs/demo/vfm_mic.py')
    demo = load('configs/demo/source_only.py')
    assert so.model.segmentor.backbone.type == 'DINOv2VisionTransformer'
    assert so.train_dataloader == demo.train_dataloader
    assert so.optim_wrapper == demo.optim_wrapper
    assert mic.model.segmentor == so.model.segmentor
    assert [m['type'] for m in mic.model.methods] == [
        'SelfTraining', 'MaskedImageConsistency']
    import tools.run_demo as run_demo
    for name in ('vfm_source_only', 'vfm_mic'):
        assert name in run_demo.METHODS and name in run_demo.NAMES


def test_frozen_lora_config_trains_only_adapters_and_head():
    cfg = load('configs/vfm/gta2cs_dinov2_vitl_frozen_lora_mic.py')
    mic = load('configs/vfm/gta2cs_dinov2_vitl_mic.py')
    assert cfg.model.freeze_backbone is True
    assert cfg.model.backbone_adapter.type == 'LoRA'
    assert cfg.model.methods == mic.model.methods
    model = MODELS.build(shallow(cfg.model))
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    lrs = {}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            lrs[id(p)] = group['lr']
    base = cfg.optim_wrapper.optimizer.lr
    trained = {n for n, p in model.named_parameters() if id(p) in lrs}
    assert trained == {n for n, p in model.named_parameters()
                       if n.startswith('student.') and p.requires_grad}
    for name, p in model.named_parameters():
        if not name.startswith('student.'):
            continue
        if 'lora_' in name or 'decode_head' in name:
            assert id(p) in lrs and lrs[id(p)] == pytest.approx(base), name
        else:  # the frozen encoder: no optimizer entry at all
            assert 'backbone' in name and id(p) not in lrs, name
