"""configs/t2s/*: load, carry the reconstructed T2S values, and build
through the registry (random init, SyncBN -> BN); the UDA config runs one
loss with SelfTraining + T2S composed, on a shallow copy of its network."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config

# registration of the components the configs name (the package
# __init__ files import them too once they are listed there)
import mmseg_uda.models.decode_heads.daformer_head  # noqa: F401
import mmseg_uda.models.uda.self_training  # noqa: F401
import mmseg_uda.models.uda.t2s  # noqa: F401
from mmseg_uda.models.uda.t2s import T2S
from mmseg_uda.registry import MODELS
from t2s_utils import set_iter
from uda_utils import random_uda_batch, to_plain_bn

CONFIG_DIR = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                      'configs', 't2s')


def load(name):
    return Config.fromfile(osp.join(CONFIG_DIR, f'{name}.py'))


def shallow(model_cfg):
    """Random init, plain BN and the fewest encoder layers, so the network
    builds and runs on a CPU in seconds (channels unchanged)."""
    model_cfg = to_plain_bn(copy.deepcopy(model_cfg))
    encoders = [model_cfg.segmentor.backbone] + [
        m['imnet_feature_dist_encoder'] for m in model_cfg.methods
        if m.get('imnet_feature_dist_encoder')
    ]
    for enc in encoders:
        enc['init_cfg'] = None
        if enc['type'] == 'MixVisionTransformer':
            enc['num_layers'] = [1, 1, 1, 1]
        elif enc['type'] in ('ResNetV1c', 'ResNet'):
            enc['depth'] = 50  # bottleneck: layer4 still has 2048 channels
    return model_cfg


def t2s_entry(cfg):
    entries = [m for m in cfg.model.methods if m['type'] == 'T2S']
    assert len(entries) == 1
    return entries[0]


def warmup_hook(cfg):
    hooks = {h['type']: h for h in cfg.custom_hooks}
    return hooks['LossWeightScheduleHook']['schedules']['t2s.loss_t2s']


@pytest.mark.parametrize('name', ['gta2cs', 'synthia2cs', 'gta2cs_dlv2'])
def test_uda_configs_compose_self_training_and_reconstructed_t2s(name):
    cfg = load(name)
    assert [m['type'] for m in cfg.model.methods] == ['SelfTraining', 'T2S']
    t2s = t2s_entry(cfg)
    assert t2s.loss.temperature == 0.1 and t2s.loss.loss_weight == 1.0
    # T2S-DA's engine (tests/test_style_augmentor.py covers it)
    assert t2s.style.type == 'StyleAugmentorStyleTransfer'
    assert t2s.style.alpha == 0.5
    assert (t2s.num_queries, t2s.num_negatives, t2s.queue_length) == \
        (256, 256, 2048)
    assert t2s.direction == 't2s' and t2s.reweight_gamma == 1.0
    assert t2s.perf_momentum == 0.99 and len(t2s.class_names) == 19
    assert warmup_hook(cfg) == dict(type='linear', begin=0, end=1500,
                                    start_factor=0.0, end_factor=1.0)
    ema = {h['type']: h for h in cfg.custom_hooks}['EMATeacherHook']
    assert t2s.projection_ema_alpha == ema['alpha']
    head = t2s.projection_head
    expected = 2048 if name == 'gta2cs_dlv2' else 256
    assert head.in_channels == expected
    assert cfg.model.segmentor.decode_head.type == (
        'DLV2Head' if name == 'gta2cs_dlv2' else 'DAFormerHead')


def test_dg_config_has_no_target_and_no_self_training():
    cfg = load('gta2cs_dg')
    assert [m['type'] for m in cfg.model.methods] == ['T2S']
    t2s = t2s_entry(cfg)
    assert t2s.dg_mode and t2s.style.type == 'StyleAugmentorStyleTransfer'
    assert t2s.perf_metric == 'stylised_iou'
    assert cfg.train_dataloader.dataset.target is None
    assert warmup_hook(cfg)['end'] == 1500


@pytest.mark.parametrize('name', ['gta2cs', 'gta2cs_dlv2', 'gta2cs_dg'])
def test_config_model_builds_and_runs_a_loss(name):
    cfg = load(name)
    # StyleAugmentor on random weights (tests have no weight files); the
    # 32-px test crops are below its style predictor's 43-px minimum, so
    # only its transformer runs here (the predictor is covered by
    # tests/test_style_augmentor.py)
    t2s_entry(cfg).style.update(random_weights=True, base_embedding='zero')
    # the full network builds through the registry
    full = to_plain_bn(copy.deepcopy(cfg.model))
    full.segmentor.backbone.init_cfg = None
    if name == 'gta2cs':
        model = MODELS.build(full)
        assert isinstance(model.methods[1], T2S)
        del model
    # a shallow copy runs one loss with every method of the config
    torch.manual_seed(0)
    model = MODELS.build(shallow(cfg.model))  # constructor's random init
    model.teacher.load_state_dict(model.student.state_dict())
    model.teacher_initialized.fill_(1)
    batch = random_uda_batch(batch_size=2, h=32, w=32, num_classes=19)
    if name == 'gta2cs_dg':
        for key in ('inputs', 'data_samples'):
            batch[key].pop('target')
    set_iter(0)
    data = model.data_preprocessor(batch, True)
    losses = model.loss(data['inputs'], data['data_samples'])
    assert torch.isfinite(losses['t2s.loss_t2s'])
    assert losses['t2s.present_classes'] > 0
    assert 't2s.w.road' in losses
    t2s = [m for m in model.methods if isinstance(m, T2S)][0]
    assert int(t2s.queue_fill_source.sum()) > 0
