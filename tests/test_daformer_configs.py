"""configs/daformer/*: load, carry DAFormer's values, pass the package's
config checks and build through the registry (random init, SyncBN -> BN);
one training step of SelfTraining on a shallow copy of the network."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config

# registration of the components the configs name (the package __init__
# files import them too once they are listed there)
import mmseg_uda.models.decode_heads.daformer_head  # noqa: F401
import mmseg_uda.models.uda.self_training  # noqa: F401
from mmseg_uda.engine.config_checks import check_config
from mmseg_uda.engine.optimizers import UDAOptimWrapperConstructor
from mmseg_uda.models.uda.self_training import SelfTraining
from mmseg_uda.registry import MODELS
from uda_utils import random_uda_batch, to_plain_bn

CONFIG_DIR = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                      'configs', 'daformer')
THINGS = [6, 7, 11, 12, 13, 14, 15, 16, 17, 18]


def load(name):
    return Config.fromfile(osp.join(CONFIG_DIR, f'{name}.py'))


def no_pretrained(model_cfg):
    model_cfg = to_plain_bn(copy.deepcopy(model_cfg))
    encoders = [model_cfg.segmentor.backbone] + [
        m['imnet_feature_dist_encoder'] for m in model_cfg.methods
        if m.get('imnet_feature_dist_encoder')
    ]
    for enc in encoders:
        enc['init_cfg'] = None
    return model_cfg, encoders


def hooks(cfg):
    return {h['type']: h for h in cfg.custom_hooks}


def val_scales(cfg):
    return [
        t.get('scale') for t in cfg.val_dataloader.dataset.pipeline
        if t['type'] == 'Resize'
    ]


@pytest.mark.parametrize('name', ['gta2cs', 'synthia2cs'])
def test_daformer_configs_carry_daformer_values(name):
    cfg = load(name)
    check_config(cfg, check_weights=False, data_loaders=())
    model = cfg.model
    assert model.type == 'UDASegmentor' and model.teacher_mode == \
        'dropout_off'
    seg = model.segmentor
    assert seg.backbone.type == 'MixVisionTransformer'
    assert seg.backbone.num_layers == [3, 6, 40, 3]
    assert seg.backbone.init_cfg.checkpoint == 'pretrained/mit_b5.pth'
    assert seg.decode_head.type == 'DAFormerHead'
    assert seg.decode_head.fusion_dilations == (1, 6, 12, 18)
    assert seg.decode_head.num_classes == 19
    (method, ) = model.methods
    assert method.type == 'SelfTraining'
    assert method.pseudo_threshold == 0.968
    assert (method.pseudo_weight_ignore_top,
            method.pseudo_weight_ignore_bottom) == (15, 120)
    assert (method.color_jitter_strength,
            method.color_jitter_probability) == (0.2, 0.2)
    assert method.blur
    assert method.imnet_feature_dist_lambda == 0.005
    assert method.imnet_feature_dist_classes == THINGS
    assert method.imnet_feature_dist_scale_min_ratio == 0.75
    assert method.imnet_feature_dist_encoder == seg.backbone
    assert hooks(cfg)['EMATeacherHook']['alpha'] == 0.999
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.train_dataloader.dataset.rare_class_sampling == dict(
        min_pixels=3000, class_temp=0.01, min_crop_ratio=0.5)
    assert cfg.randomness.seed == 0
    assert cfg.train_cfg.max_iters == 40000
    assert cfg.train_cfg.val_interval == 4000
    assert cfg.optim_wrapper.optimizer == dict(
        type='AdamW', lr=6e-05, betas=(0.9, 0.999), weight_decay=0.01)
    assert (1024, 512) in val_scales(cfg)


def test_synthia_config_differs_from_gta_only_in_data():
    gta, syn = load('gta2cs'), load('synthia2cs')
    assert gta.model == syn.model
    assert gta.custom_hooks == syn.custom_hooks
    assert gta.optim_wrapper == syn.optim_wrapper
    assert gta.param_scheduler == syn.param_scheduler
    assert gta.train_dataloader.dataset.source != \
        syn.train_dataloader.dataset.source


def test_dlv2_config_is_plain_dacs_on_deeplabv2():
    cfg = load('gta2cs_dlv2')
    check_config(cfg, check_weights=False, data_loaders=())
    seg = cfg.model.segmentor
    assert seg.backbone.type == 'ResNetV1c' and seg.backbone.depth == 101
    assert seg.decode_head.type == 'DLV2Head'
    assert tuple(seg.decode_head.dilations) == (6, 12)
    (method, ) = cfg.model.methods
    assert method.imnet_feature_dist_lambda == 0.0
    assert (method.pseudo_weight_ignore_top,
            method.pseudo_weight_ignore_bottom) == (0, 0)
    assert hooks(cfg)['EMATeacherHook']['alpha'] == 0.99
    assert cfg.train_dataloader.dataset.rare_class_sampling is None
    assert cfg.optim_wrapper.paramwise_cfg == dict(
        custom_keys=dict(head=dict(lr_mult=10.0)))
    model_cfg, _ = no_pretrained(cfg.model)
    model = MODELS.build(model_cfg)
    assert isinstance(model.methods[0], SelfTraining)
    assert model.methods[0].imnet_encoder is None


def test_full_daformer_model_builds():
    cfg = load('gta2cs')
    model_cfg, _ = no_pretrained(cfg.model)
    model = MODELS.build(model_cfg)
    method = model.methods[0]
    assert isinstance(method, SelfTraining)
    # MiT-B5 encoder (SegFormer: 81.4M) and the DAFormer decoder (3.7M)
    assert sum(p.numel() for p in model.student.backbone.parameters()) == \
        81443008
    assert sum(p.numel()
               for p in model.student.decode_head.parameters()) == 3712275
    frozen = method.imnet_encoder
    assert type(frozen) is type(model.student.backbone)
    assert not any(p.requires_grad for p in frozen.parameters())


@pytest.mark.parametrize('name', ['gta2cs', 'gta2cs_dlv2'])
def test_config_runs_a_train_step_on_a_shallow_network(name):
    """The config's method and optimizer on the config's network with the
    fewest encoder layers (CPU-sized), 32x32 crops, 19 classes."""
    cfg = load(name)
    model_cfg, encoders = no_pretrained(cfg.model)
    for enc in encoders:
        if enc['type'] == 'MixVisionTransformer':
            enc['num_layers'] = [1, 1, 1, 1]
        else:
            enc['depth'] = 50  # layer4 keeps 2048 channels
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)  # PyTorch default init (fast)
    model.teacher.load_state_dict(model.student.state_dict())
    model.teacher_initialized.fill_(1)
    method = model.methods[0]
    method.pseudo_weight_ignore_top = 2  # 32-pixel crops
    method.pseudo_weight_ignore_bottom = 4
    optim_cfg = cfg.optim_wrapper.to_dict()
    optim_cfg.pop('constructor')
    optim = UDAOptimWrapperConstructor(optim_cfg)(model)
    batch = random_uda_batch(batch_size=2, h=32, w=32, num_classes=19)
    log_vars = model.train_step(batch, optim)
    assert torch.isfinite(log_vars['loss'])
    assert torch.isfinite(log_vars['selftraining.loss_mix'])
    assert ('selftraining.loss_fd' in log_vars) == (name == 'gta2cs')
