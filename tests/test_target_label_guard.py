"""Target labels never reach training: UDADataset refuses a label loader
anywhere in the target pipeline (wrappers included, in the config and in
the built pipeline), checks every target sample it returns, and the data
preprocessor / UDASegmentor.loss refuse a target sample that carries
``gt_sem_seg``."""
import copy

import mmcv
import pytest
import torch
from mmcv.transforms import BaseTransform
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

from data_utils import make_cityscapes, make_gta
from mmseg_uda.datasets import UDADataset
from mmseg_uda.datasets.conversion import convert_dataset
from mmseg_uda.datasets.uda_dataset import (find_cfg_label_loaders,
                                            find_label_loaders)
from mmseg_uda.registry import DATASETS, MODELS, TRANSFORMS
from uda_utils import random_uda_batch, uda_model_cfg

SOURCE_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
LOAD = dict(type='LoadAnnotations')
FLIP = dict(type='RandomFlip', prob=1.0)


@TRANSFORMS.register_module(force=True)
class _HoldsInnerTransform(BaseTransform):
    """A custom wrapper keeping its transform under an unusual name."""

    def __init__(self, inner):
        self.inner = TRANSFORMS.build(inner)

    def transform(self, results):
        return self.inner(results)


@TRANSFORMS.register_module(force=True)
class _ReadsLabelByItself(BaseTransform):
    """Loads the label without being (or holding) a LoadAnnotations: only
    the run-time check can see it."""

    def transform(self, results):
        results['gt_seg_map'] = mmcv.imread(
            results['seg_map_path'], flag='unchanged')
        results.setdefault('seg_fields', []).append('gt_seg_map')
        return results


# (name, target pipeline with a label loader hidden in a wrapper)
WRAPPED = {
    'Compose': [dict(type='LoadImageFromFile'),
                dict(type='Compose', transforms=[FLIP, LOAD]),
                dict(type='PackSegInputs')],
    'RandomApply': [dict(type='LoadImageFromFile'),
                    dict(type='RandomApply', transforms=[LOAD], prob=1.0),
                    dict(type='PackSegInputs')],
    'RandomChoice': [dict(type='LoadImageFromFile'),
                     dict(type='RandomChoice',
                          transforms=[[LOAD], [LOAD, FLIP]]),
                     dict(type='PackSegInputs')],
    'TestTimeAug': [dict(type='LoadImageFromFile'),
                    dict(type='TestTimeAug',
                         transforms=[[LOAD], [dict(type='PackSegInputs')]])],
    'custom wrapper': [dict(type='LoadImageFromFile'),
                       dict(type='_HoldsInnerTransform',
                            inner=dict(type='RandomApply',
                                       transforms=[LOAD], prob=1.0)),
                       dict(type='PackSegInputs')],
}


@pytest.fixture(autouse=True)
def mmseg_scope():
    init_default_scope('mmseg')


@pytest.fixture(scope='module')
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp('guard')
    make_gta(base / 'gta', 2, size=(16, 32), seed=1)
    convert_dataset(str(base / 'gta'), 'gta', log=None, progress=False)
    make_cityscapes(base / 'cs', num_train=2, num_val=1, size=(16, 32))
    return dict(gta=str(base / 'gta'), cs=str(base / 'cs'))


def source_cfg(roots):
    return dict(type='GTAVDataset', data_root=roots['gta'],
                pipeline=SOURCE_PIPELINE)


def target_cfg(roots, pipeline):
    # labelIds files exist next to the images, so a label loader would
    # really load them.
    return dict(type='CityscapesDataset', data_root=roots['cs'],
                data_prefix=dict(img_path='leftImg8bit/train',
                                 seg_map_path='gtFine/train'),
                seg_map_suffix='_gtFine_labelIds.png',
                # deep copy: building TestTimeAug edits its cfg in place
                pipeline=copy.deepcopy(pipeline))


@pytest.mark.parametrize('name', list(WRAPPED))
def test_wrapped_loader_really_loads_the_label(roots, name):
    """Negative control: each wrapped pipeline does put gt_sem_seg on the
    target sample, so the guard has something to catch."""
    target = DATASETS.build(target_cfg(roots, WRAPPED[name]))
    out = target[0]
    samples = out['data_samples']
    sample = samples[0] if isinstance(samples, list) else samples
    assert 'gt_sem_seg' in sample


@pytest.mark.parametrize('name', list(WRAPPED))
def test_config_with_wrapped_loader_is_refused(roots, name):
    with pytest.raises(ValueError) as err:
        UDADataset(source=source_cfg(roots),
                   target=target_cfg(roots, WRAPPED[name]))
    message = str(err.value)
    assert 'remove LoadAnnotations from the target pipeline' in message
    assert 'pipeline[1]' in message and '(LoadAnnotations)' in message


@pytest.mark.parametrize('name', list(WRAPPED))
def test_built_pipeline_with_wrapped_loader_is_refused(roots, name):
    target = DATASETS.build(target_cfg(roots, WRAPPED[name]))
    where = find_label_loaders(target.pipeline)
    assert where and all('LoadAnnotations' in w for w in where), where
    with pytest.raises(ValueError,
                       match='remove LoadAnnotations from the target'):
        UDADataset(source=source_cfg(roots), target=target)


def test_paths_name_each_nested_loader(roots):
    cfg_where = find_cfg_label_loaders(copy.deepcopy(WRAPPED['RandomChoice']))
    assert cfg_where == [
        'pipeline[1].transforms[0][0] (LoadAnnotations)',
        'pipeline[1].transforms[1][0] (LoadAnnotations)'
    ]
    target = DATASETS.build(target_cfg(roots, WRAPPED['custom wrapper']))
    assert find_label_loaders(target.pipeline) == [
        'pipeline.transforms[1].inner.transforms.transforms[0] '
        '(LoadAnnotations)'
    ]


def test_wrappers_without_loader_are_accepted(roots):
    clean = [dict(type='LoadImageFromFile'),
             dict(type='RandomApply', transforms=[FLIP], prob=1.0),
             dict(type='_HoldsInnerTransform',
                  inner=dict(type='RandomChoice', transforms=[[FLIP]])),
             dict(type='PackSegInputs')]
    ds = UDADataset(source=source_cfg(roots), target=target_cfg(roots, clean))
    item = ds[(0, 1, 5)]
    assert 'gt_sem_seg' in item['data_samples']['source']
    assert 'gt_sem_seg' not in item['data_samples']['target']


def test_every_sample_is_checked_at_run_time(roots):
    """A transform that loads the label without being or holding a
    LoadAnnotations passes the construction check; the sample it produces
    is refused, naming the index and what to remove."""
    sneaky = [dict(type='LoadImageFromFile'),
              dict(type='_ReadsLabelByItself'),
              dict(type='PackSegInputs')]
    ds = UDADataset(source=source_cfg(roots), target=target_cfg(roots,
                                                                sneaky))
    with pytest.raises(ValueError) as err:
        ds[(0, 1, 3)]
    message = str(err.value)
    assert 'UDADataset[(0, 1, 3)]: target sample 1' in message
    assert "['gt_sem_seg']" in message
    assert 'remove LoadAnnotations' in message
    with pytest.raises(ValueError, match='target sample 0'):
        ds[0]  # plain int indices too


@pytest.mark.parametrize('name', list(WRAPPED))
def test_pipeline_swapped_after_construction_is_caught(roots, name):
    """The run-time check alone (construction saw a clean pipeline)
    catches every wrapper case."""
    plain = [dict(type='LoadImageFromFile'), dict(type='PackSegInputs')]
    ds = UDADataset(source=source_cfg(roots), target=target_cfg(roots, plain))
    assert 'gt_sem_seg' not in ds[0]['data_samples']['target']
    ds.target.pipeline = DATASETS.build(
        target_cfg(roots, WRAPPED[name])).pipeline
    with pytest.raises(ValueError, match=r"target sample 1 .*carries "
                       r"\['gt_sem_seg'\]"):
        ds[1]


def labelled_target_batch():
    batch = random_uda_batch(batch_size=2, h=16, w=16)
    batch['data_samples']['target'][1].gt_sem_seg = PixelData(
        data=torch.zeros(1, 16, 16, dtype=torch.long))
    return batch


def test_preprocessor_refuses_labelled_target():
    model = MODELS.build(ConfigDict(uda_model_cfg()))
    clean = random_uda_batch(batch_size=2, h=16, w=16)
    model.data_preprocessor(copy.deepcopy(clean), True)  # accepted
    with pytest.raises(ValueError) as err:
        model.data_preprocessor(labelled_target_batch(), True)
    message = str(err.value)
    assert message.startswith('UDADataPreProcessor: target data sample 1')
    assert "['gt_sem_seg']" in message and 'remove LoadAnnotations' in message


def test_segmentor_loss_refuses_labelled_target():
    model = MODELS.build(ConfigDict(uda_model_cfg()))
    model.init_weights()
    data = model.data_preprocessor(
        random_uda_batch(batch_size=2, h=16, w=16), True)
    assert set(model.loss(data['inputs'], data['data_samples']))
    data['data_samples']['target'][0].gt_sem_seg = PixelData(
        data=torch.zeros(1, 16, 16, dtype=torch.long))
    with pytest.raises(ValueError,
                       match='UDASegmentor.loss: target data sample 0'):
        model.loss(data['inputs'], data['data_samples'])
