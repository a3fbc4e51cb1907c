"""configs/hrda/* and configs/demo/hrda.py: load, carry the official HRDA
values (lhoyer/HRDA@c370b5b configs/hrda/gtaHR2csHR_hrda.py and its bases),
pass the package's config checks, build through the registry, and run a
training step on a shallow copy of the network; the HR dataset bases resize
as mmcv 1.x did."""
import copy
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmseg_uda.engine.config_checks import check_config
from mmseg_uda.engine.optimizers import UDAOptimWrapperConstructor
from mmseg_uda.models.segmentors import HRDAEncoderDecoder
from mmseg_uda.registry import MODELS, TRANSFORMS
from uda_utils import random_uda_batch, to_plain_bn

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
THINGS = [6, 7, 11, 12, 13, 14, 15, 16, 17, 18]


def load(path):
    return Config.fromfile(osp.join(REPO, path))


def no_pretrained(model_cfg):
    model_cfg = to_plain_bn(copy.deepcopy(model_cfg))
    encoders = [model_cfg.segmentor.backbone] + [
        m['imnet_feature_dist_encoder'] for m in model_cfg.methods
        if m.get('imnet_feature_dist_encoder')
    ]
    for enc in encoders:
        enc['init_cfg'] = None
    return model_cfg, encoders


@pytest.mark.parametrize('name', ['gta2cs', 'synthia2cs'])
def test_hrda_configs_carry_official_values(name):
    cfg = load(f'configs/hrda/{name}.py')
    check_config(cfg, check_weights=False, data_loaders=())
    seg = cfg.model.segmentor
    assert seg.type == 'HRDAEncoderDecoder'
    assert sorted(seg.scales) == [0.5, 1]
    assert list(seg.hr_crop_size) == [512, 512]
    assert seg.feature_scale == 0.5 and seg.crop_coord_divisible == 8
    assert seg.hr_slide_inference and seg.hr_slide_overlapping
    assert not seg.blur_hr_crop
    assert seg.test_cfg == dict(mode='slide', stride=(512, 512),
                                crop_size=(1024, 1024))
    head = seg.decode_head
    assert head.type == 'HRDAHead'
    assert head.single_scale_head == 'DAFormerHead'
    assert head.attention_classwise and head.attention_embed_dim == 256
    assert head.hr_loss_weight == 0.1 and head.lr_loss_weight == 0
    assert head.fixed_attention is None
    # the DAFormer head inside (daformer_sepaspp_mitb5.py)
    assert head.fusion == 'aspp' and head.fusion_separable
    assert tuple(head.fusion_dilations) == (1, 6, 12, 18)
    assert seg.backbone.num_layers == [3, 6, 40, 3]
    st, = cfg.model.methods
    assert st.type == 'SelfTraining' and st.pseudo_threshold == 0.968
    assert st.pseudo_weight_ignore_top == 0
    assert st.pseudo_weight_ignore_bottom == 0
    assert st.imnet_feature_dist_lambda == 0.005
    assert st.imnet_feature_dist_classes == THINGS
    assert st.imnet_feature_dist_scale_min_ratio == 0.75
    assert (st.color_jitter_strength, st.color_jitter_probability,
            st.blur) == (0.2, 0.2, True)
    assert {h.type: h for h in cfg.custom_hooks}['EMATeacherHook'].alpha \
        == 0.999
    data = cfg.train_dataloader
    assert data.batch_size == 2 and data.num_workers == 1
    assert data.dataset.rare_class_sampling == dict(
        min_pixels=3000, class_temp=0.01, min_crop_ratio=2.0)
    target = data.dataset.target.pipeline
    assert target[1] == dict(type='GenerateValidPseudoMask',
                             margins=(30, 240, 30, 30), size=(1024, 2048))
    assert target[-1]['type'] == 'PackSegInputsWithValidMask'
    assert not any('LoadAnnotations' in t['type'] for t in target)
    crops = [t['crop_size'] for t in data.dataset.source.pipeline +
             target if t['type'] == 'RandomCrop']
    assert crops == [(1024, 1024), (1024, 1024)]
    source_scale = {'gta2cs': (2560, 1440), 'synthia2cs': (2560, 1520)}[name]
    assert data.dataset.source.pipeline[2]['scale'] == source_scale
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        assert loader.dataset.pipeline[1] == dict(
            type='Resize', scale=(2048, 1024), keep_ratio=True)
    optim = cfg.optim_wrapper
    assert optim.optimizer.lr == 6e-05
    assert optim.paramwise_cfg.custom_keys['head'] == dict(lr_mult=10.0)
    assert cfg.train_cfg.max_iters == 40000
    assert cfg.randomness.seed == {'gta2cs': 1, 'synthia2cs': 0}[name]


def test_hr_resize_matches_mmcv1_rule():
    """mmcv 1.x Resize(img_scale, keep_ratio): factor min(long_max/long,
    short_max/short); GTA 1914x1052 -> 2560x1407, SYNTHIA 1280x760 ->
    2560x1520, Cityscapes 2048x1024 unchanged."""
    for scale, (w, h), expected in [((2560, 1440), (1914, 1052),
                                     (1407, 2560)),
                                    ((2560, 1520), (1280, 760),
                                     (1520, 2560)),
                                    ((2048, 1024), (2048, 1024),
                                     (1024, 2048))]:
        resize = TRANSFORMS.build(dict(type='Resize', scale=scale,
                                       keep_ratio=True))
        out = resize(dict(img=np.zeros((h, w, 3), np.uint8)))
        assert out['img'].shape[:2] == expected


def test_full_hrda_model_builds():
    cfg = load('configs/hrda/gta2cs.py')
    model_cfg, _ = no_pretrained(cfg.model)
    model = MODELS.build(model_cfg)
    assert isinstance(model.student, HRDAEncoderDecoder)
    head = model.student.decode_head
    # the shared DAFormer head (3.7M) as in DAFormer; parameter names keep
    # HRDA's decode_head.head.* / decode_head.scale_attention.*, both matched
    # by the optimizer's 'head' key (lr x10)
    assert sum(p.numel() for p in head.head.parameters()) == 3712275
    assert type(head.scale_attention.fuse_layer).__name__ == 'ConvModule'
    assert head.scale_attention.num_classes == 19
    assert head.output_stride == 4


def test_config_runs_a_train_step_on_a_shallow_network():
    """The GTA config's method, head and optimizer on a one-layer-per-stage
    MiT, 64x64 crops with a 32x32 detail crop, 19 classes."""
    cfg = load('configs/hrda/gta2cs.py')
    model_cfg, encoders = no_pretrained(cfg.model)
    for enc in encoders:
        enc['num_layers'] = [1, 1, 1, 1]
    model_cfg.segmentor.hr_crop_size = [32, 32]
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.teacher.load_state_dict(model.student.state_dict())
    model.teacher_initialized.fill_(1)
    optim_cfg = cfg.optim_wrapper.to_dict()
    optim_cfg.pop('constructor')
    optim = UDAOptimWrapperConstructor(optim_cfg)(model)
    lr_mults = {id(p): g['lr'] for g in optim.param_groups
                for p in g['params']}
    att = next(model.student.decode_head.scale_attention.parameters())
    assert lr_mults[id(att)] == pytest.approx(6e-4)  # head key: lr x10
    batch = random_uda_batch(batch_size=2, h=64, w=64, num_classes=19)
    log_vars = model.train_step(batch, optim)
    for key in ('loss', 'src.loss_ce', 'src.hr.loss_ce',
                'selftraining.loss_mix', 'selftraining.loss_mix_hr',
                'selftraining.loss_fd'):
        assert torch.isfinite(log_vars[key]), key


def test_demo_config_is_daformer_demo_on_hrda():
    cfg = load('configs/demo/hrda.py')
    daformer = load('configs/demo/daformer.py')
    check_config(cfg, check_weights=False, data_loaders=())
    seg = cfg.model.segmentor
    assert seg.type == 'HRDAEncoderDecoder'
    assert seg.decode_head.single_scale_head == 'DLV2Head'
    assert list(seg.hr_crop_size) == [64, 64]  # 512 in 1024, divided by 8
    assert seg.test_cfg.crop_size == (128, 128)
    assert seg.test_cfg.stride == (64, 64)
    assert cfg.model.methods == daformer.model.methods
    assert cfg.train_dataloader == daformer.train_dataloader
    assert cfg.custom_hooks == daformer.custom_hooks
    model = MODELS.build(to_plain_bn(copy.deepcopy(cfg.model)))
    assert model.student.decode_head.output_stride == 8
