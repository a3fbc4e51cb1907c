"""configs/mic/* and configs/demo/mic.py: load, carry the official MIC
values (lhoyer/MIC @ 2f932a9), build through the registry and run one loss
with SelfTraining + MaskedImageConsistency on a shallow copy of the
network."""
import copy
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub

import mmseg_uda  # noqa: F401
from mmseg_uda.models.uda.mic import MaskedImageConsistency
from mmseg_uda.registry import MODELS
from uda_utils import random_uda_batch, to_plain_bn

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
MIC_CONFIGS = sorted(
    osp.relpath(p, REPO)
    for p in glob.glob(osp.join(REPO, 'configs', 'mic', '*.py'))) + [
        'configs/t2s/gta2cs_hrda.py'
    ]


def load(rel):
    return Config.fromfile(osp.join(REPO, rel))


def mic_entry(cfg):
    entries = [m for m in cfg.model.methods
               if m['type'] == 'MaskedImageConsistency']
    assert len(entries) == 1
    return entries[0]


def shallow(model_cfg):
    """Random init, plain BN, one layer per MiT stage; HRDA's detail crop
    shrunk to 32 px for 64-px test crops."""
    model_cfg = to_plain_bn(copy.deepcopy(model_cfg))
    if model_cfg.segmentor.type == 'HRDAEncoderDecoder':
        model_cfg.segmentor.hr_crop_size = (32, 32)
    encoders = [model_cfg.segmentor.backbone] + [
        m['imnet_feature_dist_encoder'] for m in model_cfg.methods
        if m.get('imnet_feature_dist_encoder')
    ]
    for enc in encoders:
        enc['init_cfg'] = None
        if enc['type'] == 'MixVisionTransformer':
            enc['num_layers'] = [1, 1, 1, 1]
    return model_cfg


def test_mic_daformer_recipe_values():
    cfg = load('configs/mic/gta2cs_daformer.py')
    daformer = load('configs/daformer/gta2cs.py')
    assert [m['type'] for m in cfg.model.methods] == [
        'SelfTraining', 'MaskedImageConsistency']
    mic = mic_entry(cfg)
    # experiments.py id 81, daformer_sepaspp/mitb5 row
    assert mic.mask_mode == 'separatetrgaug'
    assert mic.mask_generator == dict(type='block', mask_ratio=0.7,
                                      mask_block_size=32)
    assert mic.mask_lambda == 1.0
    assert (mic.mask_alpha, mic.mask_pseudo_threshold) == ('same', 'same')
    assert (mic.color_jitter_strength, mic.color_jitter_probability) == (
        0.2, 0.2)
    # everything else is the DAFormer recipe, unchanged
    assert cfg.model.methods[0] == daformer.model.methods[0]
    assert cfg.model.segmentor == daformer.model.segmentor
    assert cfg.train_dataloader == daformer.train_dataloader
    assert cfg.optim_wrapper == daformer.optim_wrapper
    assert cfg.custom_hooks == daformer.custom_hooks
    assert cfg.train_cfg == daformer.train_cfg


def test_demo_config_is_daformer_demo_plus_mic():
    cfg = load('configs/demo/mic.py')
    daformer = load('configs/demo/daformer.py')
    assert cfg.model.methods[0] == daformer.model.methods[0]
    assert mic_entry(cfg).mask_generator.mask_block_size == 8
    cfg.model.methods = cfg.model.methods[:1]
    assert cfg.model == daformer.model
    assert cfg.train_dataloader == daformer.train_dataloader
    import tools.run_demo as run_demo
    assert 'mic' in run_demo.METHODS and 'mic' in run_demo.NAMES


# One loss for each kind: plain DAFormer, HRDA with 'separatetrgaug', HRDA
# with 'separate', and the three-method composition; the other configs are
# built only (their models equal one of these, see the recipe tests).
RUN_LOSS = ('configs/mic/gta2cs_daformer.py', 'configs/mic/gta2cs_hrda.py',
            'configs/mic/cs2acdc_hrda.py', 'configs/t2s/gta2cs_hrda.py')


@pytest.mark.parametrize('rel', MIC_CONFIGS)
def test_mic_config_builds_and_runs_a_loss(rel):
    cfg = load(rel)
    model_cfg = shallow(cfg.model)
    for method in model_cfg.methods:
        if method['type'] == 'T2S':  # no style weights here: the FDA engine
            method['style'] = dict(type='FDAStyleTransfer', beta=0.01)
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    assert isinstance(model.methods[1], MaskedImageConsistency)
    if rel not in RUN_LOSS:
        return
    model.teacher.load_state_dict(model.student.state_dict())
    model.teacher_initialized.fill_(1)
    # 64 px: two 32-px blocks (DAFormer), one 64-px block (HRDA)
    size = 64
    batch = random_uda_batch(batch_size=2, h=size, w=size, num_classes=19)
    MessageHub.get_current_instance().update_info('iter', 0)
    data = model.data_preprocessor(batch, True)
    losses = model.loss(data['inputs'], data['data_samples'])
    assert torch.isfinite(losses['mic.loss_masked'])
    assert 0.0 <= float(losses['mic.mask_keep_ratio']) <= 1.0
    hrda = cfg.model.segmentor.type == 'HRDAEncoderDecoder'
    # HRDA: the masked pass is multi-resolution (fused + detail terms)
    assert ('mic.loss_masked_hr' in losses) == hrda
    if 't2s' in rel:
        assert torch.isfinite(losses['t2s.loss_t2s'])


def test_mic_hrda_recipe_values():
    """MIC(HRDA) = the HRDA recipe + the MIC keys (gtaHR2csHR_mic_hrda.py,
    experiments.py id 80)."""
    for name, base, mode, seed in [
            ('gta2cs_hrda', 'configs/hrda/gta2cs.py', 'separatetrgaug', 2),
            ('synthia2cs_hrda', 'configs/hrda/synthia2cs.py',
             'separatetrgaug', 0)]:
        cfg = load(f'configs/mic/{name}.py')
        hrda = load(base)
        mic = mic_entry(cfg)
        assert mic.mask_mode == mode
        assert mic.mask_generator == dict(type='block', mask_ratio=0.7,
                                          mask_block_size=64)
        assert mic.mask_lambda == 1.0
        assert cfg.model.methods[0] == hrda.model.methods[0]
        assert cfg.model.segmentor == hrda.model.segmentor
        assert cfg.train_dataloader == hrda.train_dataloader
        assert cfg.optim_wrapper == hrda.optim_wrapper
        assert cfg.randomness.seed == seed
    for name in ('cs2acdc_hrda', 'cs2darkzurich_hrda'):
        cfg = load(f'configs/mic/{name}.py')
        assert mic_entry(cfg).mask_mode == 'separate'
        assert cfg.train_dataloader.batch_size == 2  # 'separate' needs 2
        st = cfg.model.methods[0]
        assert (st.pseudo_weight_ignore_top,
                st.pseudo_weight_ignore_bottom) == (0, 0)
        types = [t['type'] for t in
                 cfg.train_dataloader.dataset.target.pipeline]
        assert 'GenerateValidPseudoMask' not in types  # no margins
    t2s = load('configs/t2s/gta2cs_hrda.py')
    assert [m['type'] for m in t2s.model.methods] == [
        'SelfTraining', 'MaskedImageConsistency', 'T2S']
