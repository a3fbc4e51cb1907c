"""configs/_base_/datasets/*.py: recipe values (AdaptSegNet, PLCA and DAFormer
official code) and that
their pipelines build and run through mmseg's registry on tiny fake data
(the evaluator is not built)."""
import os.path as osp

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

from data_utils import make_cityscapes, make_gta, make_synthia
from mmseg_uda.datasets.conversion import convert_dataset
from mmseg_uda.registry import DATASETS

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG_DIR = osp.join(REPO, 'configs', '_base_', 'datasets')
CONFIGS = ('gta2cs_adaptsegnet', 'synthia2cs_adaptsegnet', 'gta2cs_512x512',
           'synthia2cs_512x512', 'demo_gta2cs')


@pytest.fixture(autouse=True)
def mmseg_scope():
    init_default_scope('mmseg')


def load(name):
    return Config.fromfile(osp.join(CONFIG_DIR, f'{name}.py'))


def step(pipeline, kind):
    found = [s for s in pipeline if s['type'] == kind]
    return found[0] if found else None


@pytest.mark.parametrize('name', CONFIGS)
def test_common_structure(name):
    cfg = load(name)
    train = cfg.train_dataloader
    assert train.sampler.type == 'UDAPairSampler' and train.sampler.shuffle
    assert train.dataset.type == 'UDADataset'
    target = train.dataset.target
    assert target.type == 'CityscapesDataset'
    assert step(target.pipeline, 'LoadAnnotations') is None
    assert 'seg_map_path' not in target.data_prefix
    for pipeline in (train.dataset.source.pipeline, target.pipeline):
        assert step(pipeline, 'PhotoMetricDistortion') is None
        assert step(pipeline, 'RandomFlip').prob == 0.5
        assert pipeline[-1]['type'] == 'PackSegInputs'
    # Labels are loaded after Resize: evaluation at full label resolution.
    kinds = [s['type'] for s in cfg.test_pipeline]
    if 'Resize' in kinds:
        assert kinds.index('Resize') < kinds.index('LoadAnnotations')
    assert cfg.val_dataloader.dataset.type == 'CityscapesDataset'
    assert cfg.val_dataloader.dataset.data_prefix.img_path.endswith('val')
    assert cfg.val_evaluator == dict(type='UDAIoUMetric')
    assert cfg.test_evaluator == cfg.val_evaluator


@pytest.mark.parametrize('name, source_scale, batch, crop', [
    ('gta2cs_adaptsegnet', (1280, 720), 1, None),
    ('synthia2cs_adaptsegnet', (1280, 760), 1, None),
    ('gta2cs_512x512', (1280, 720), 2, (512, 512)),
    ('synthia2cs_512x512', (1280, 760), 2, (512, 512)),
])
def test_lineage_recipes(name, source_scale, batch, crop):
    cfg = load(name)
    source = cfg.train_dataloader.dataset.source
    target = cfg.train_dataloader.dataset.target
    assert cfg.train_dataloader.batch_size == batch
    assert source.data_root == ('data/gta'
                                if name.startswith('gta') else 'data/synthia')
    assert target.data_root == 'data/cityscapes'
    src_resize = step(source.pipeline, 'Resize')
    tgt_resize = step(target.pipeline, 'Resize')
    assert tuple(src_resize.scale) == source_scale
    assert tuple(tgt_resize.scale) == (1024, 512)
    # AdaptSegNet resizes to exact sizes, DAFormer keeps the aspect ratio.
    assert src_resize.keep_ratio == (crop is not None)
    if crop is None:
        assert step(source.pipeline, 'RandomCrop') is None
        assert step(target.pipeline, 'RandomCrop') is None
    else:
        src_crop = step(source.pipeline, 'RandomCrop')
        tgt_crop = step(target.pipeline, 'RandomCrop')
        assert tuple(src_crop.crop_size) == crop and \
            src_crop.cat_max_ratio == 0.75
        assert tuple(tgt_crop.crop_size) == crop and \
            'cat_max_ratio' not in tgt_crop
    test_resize = step(cfg.test_pipeline, 'Resize')
    assert tuple(test_resize.scale) == (1024, 512) and test_resize.keep_ratio


@pytest.fixture(scope='module')
def fake_roots(tmp_path_factory):
    base = tmp_path_factory.mktemp('cfg')
    make_gta(base / 'gta', 2, size=(40, 72))
    convert_dataset(str(base / 'gta'), 'gta', log=None, progress=False)
    make_synthia(base / 'synthia',
                 [np.full((38, 64), 3, np.uint16) for _ in range(2)])
    convert_dataset(str(base / 'synthia'), 'synthia', log=None,
                    progress=False)
    make_cityscapes(base / 'cs', num_train=2, num_val=1, size=(32, 64))
    convert_dataset(str(base / 'cs'), 'cityscapes', log=None, progress=False)
    return base


@pytest.mark.parametrize('name, source_shape, target_shape', [
    ('gta2cs_adaptsegnet', (720, 1280), (512, 1024)),
    ('synthia2cs_adaptsegnet', (760, 1280), (512, 1024)),
    ('gta2cs_512x512', (512, 512), (512, 512)),
    ('synthia2cs_512x512', (512, 512), (512, 512)),
])
def test_configs_build_and_run(fake_roots, name, source_shape, target_shape):
    cfg = load(name)
    train = cfg.train_dataloader.dataset
    train.source.data_root = str(fake_roots / name.split('2cs')[0])
    train.target.data_root = str(fake_roots / 'cs')
    item = DATASETS.build(train)[(1, 0, 3)]
    assert item['inputs']['source'].shape[1:] == source_shape
    assert item['data_samples']['source'].gt_sem_seg.data.shape[1:] == \
        source_shape
    assert item['inputs']['target'].shape[1:] == target_shape
    val = cfg.val_dataloader.dataset
    val.data_root = str(fake_roots / 'cs')
    sample = DATASETS.build(val)[0]
    assert sample['inputs'].shape[1:] == (512, 1024)
    assert sample['data_samples'].gt_sem_seg.data.shape[1:] == (32, 64)
