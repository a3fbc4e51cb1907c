"""The released PLCA configs: they load, carry the official recipe
(kgl-prml/Pixel-Level-Cycle-Association @ e01d77a0
experiments/config/{g2c,s2c}_train.yaml), build through the registry
(pretrained weights off,
SyncBN -> BN), and run PLCA on the real DeepLab-V2 network."""
import os.path as osp
import shutil

import pytest
import torch
from mmengine.config import Config

import mmseg_uda.models.uda.plca  # noqa: F401  (registers PLCA)
from mmseg_uda.models.uda.plca import PLCA
from mmseg_uda.models.utils.seg_forward import segmentor_forward
from e2e_utils import make_tiny_uda_data
from mmseg_uda.registry import DATASETS, MODELS
from uda_utils import random_uda_batch

CONFIG_DIR = osp.join(osp.dirname(osp.dirname(__file__)), 'configs', 'plca')


def load_config(name):
    cfg = Config.fromfile(osp.join(CONFIG_DIR, name))
    student = cfg.model.segmentor
    student.backbone.init_cfg = None  # no pretrained file in CI
    student.backbone.norm_cfg = dict(type='BN', requires_grad=True)
    return cfg


@pytest.mark.parametrize('name,num_classes,steps,poly_steps', [
    ('gta2cs.py', 19, 10416, 11160),
    ('synthia2cs.py', 16, 2976, 3720),
])
def test_config_recipe_and_build(name, num_classes, steps, poly_steps):
    cfg = load_config(name)
    acc = cfg.optim_wrapper.accumulative_counts
    assert cfg.train_dataloader.batch_size * 2 * acc == 8  # 8+8 on 2 GPUs
    assert cfg.train_cfg.max_iters == steps * acc
    assert cfg.param_scheduler[0].end == poly_steps * acc
    assert cfg.param_scheduler[0].power == 0.9
    assert cfg.optim_wrapper.optimizer == dict(
        type='SGD', lr=2.5e-4, momentum=0.9, weight_decay=5e-4)
    assert 'paramwise_cfg' not in cfg.optim_wrapper  # LR_MULT 1.0
    assert cfg.model.bn_mode == 'separate'
    head = cfg.model.segmentor.decode_head
    assert head.num_classes == num_classes and head.bias is False
    pipeline = cfg.train_dataloader.dataset.source.pipeline
    resize_step = next(p for p in pipeline
                       if p.type == 'RandomChoiceResize')
    assert (min(resize_step.scales), max(resize_step.scales)) == (760, 988)
    assert next(p for p in pipeline
                if p.type == 'RandomCrop').crop_size == (730, 730)
    assert cfg.test_dataloader.dataset.pipeline[1].scale == (1460, 730)
    model = MODELS.build(cfg.model)
    method = model.methods[0]
    assert isinstance(method, PLCA) and method.test_aggregation
    assert method.lovasz_weight == 3.0 and method.lambda_lsr == 0.01
    assert (method.lambda_feat, method.lambda_cls) == (0.1, 0.1)
    assert method.feat_association.alpha == 0.5
    assert model.student.decode_head.num_classes == num_classes


def test_config_network_runs_plca_on_the_layer4_feature():
    """One PLCA loss (and test-time aggregation) through the real
    DeepLab-V2 R101 + DLV2Head: the feature level uses the 2048-channel
    layer4 map at stride 8."""
    cfg = load_config('gta2cs.py')
    model = MODELS.build(cfg.model)  # PyTorch default init
    data = random_uda_batch(batch_size=1, h=41, w=41, num_classes=19,
                            ignore_frac=0.1)
    batch = model.data_preprocessor(data, True)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    for key in ('plca.loss_ass_feat', 'plca.loss_ass_cls',
                'plca.loss_lovasz', 'plca.loss_lsr'):
        assert torch.isfinite(losses[key]), key
    src = segmentor_forward(model.student, batch['inputs']['source'], True)
    assert src.feat.shape == (1, 2048, 6, 6)
    model.eval()
    with torch.no_grad():
        preds = model.predict(batch['inputs']['target'],
                              batch['data_samples']['target'])
    assert preds[0].seg_logits.data.shape == (19, 41, 41)
    # aggregated probabilities, not logits
    torch.testing.assert_close(preds[0].seg_logits.data.sum(0),
                               torch.ones(41, 41))


def test_config_data_pipelines_on_tiny_data(tmp_path):
    """The released pipelines on tiny files: 730x730 source/target crops
    (the 48x64 images are upscaled by the shorter-side resize), no target
    labels, validation resized to fit 1460x730 with full-size labels, and
    SYNTHIA's 16-class label map (sky 10 -> 9, car 13 -> 12)."""
    gta, cs = make_tiny_uda_data(str(tmp_path), num_source=2, num_target=2,
                                 num_val=1)
    synthia = tmp_path / 'synthia'
    shutil.copytree(osp.join(gta, 'images'), synthia / 'RGB')
    shutil.copytree(osp.join(gta, 'labels'), synthia / 'GT' / 'LABELS')
    for name, source_root, classes in (
            ('gta2cs.py', gta, {0, 2, 10, 13}),
            ('synthia2cs.py', str(synthia), {0, 2, 9, 12})):
        cfg = load_config(name)
        train = cfg.train_dataloader.dataset
        train.source.data_root, train.target.data_root = source_root, cs
        item = DATASETS.build(train)[0]
        assert item['inputs']['source'].shape == (3, 730, 730)
        assert item['inputs']['target'].shape == (3, 730, 730)
        label = item['data_samples']['source'].gt_sem_seg.data
        assert label.shape == (1, 730, 730)
        assert set(label.unique().tolist()) <= classes
        assert 'gt_sem_seg' not in item['data_samples']['target']
        val = cfg.val_dataloader.dataset
        val.data_root = cs
        sample = DATASETS.build(val)[0]
        assert sample['inputs'].shape == (3, 730, 973)  # 48x64 x 730/48
        val_label = sample['data_samples'].gt_sem_seg.data
        assert val_label.shape == (1, 48, 64)
        assert set(val_label.unique().tolist()) <= classes
