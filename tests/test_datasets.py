"""GTAVDataset / SynthiaDataset / mmseg's CityscapesDataset built through
mmseg's registry on converted files, and their build-time checks."""
import os
import os.path as osp

import numpy as np
import pytest
from mmengine.registry import init_default_scope
from PIL import Image

from data_utils import (LABEL_ID_TO_TRAIN_ID, SYNTHIA_ID_TO_TRAIN_ID,
                        expected_train_ids, make_cityscapes, make_gta,
                        make_synthia, write_paletted, write_rgb)
from mmseg_uda.datasets.conversion import LabelEncodingError, convert_dataset
from mmseg_uda.registry import DATASETS

PLAIN_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
TRAIN_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(64, 32), ratio_range=(0.8, 1.2),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=(16, 16), cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]


@pytest.fixture(autouse=True)
def mmseg_scope():
    init_default_scope('mmseg')


def convert(root, dataset, **kwargs):
    return convert_dataset(str(root), dataset, log=None, progress=False,
                           **kwargs)


def build(cfg):
    return DATASETS.build(cfg)


def rgb(path):
    return np.array(Image.open(path).convert('RGB'))


def test_gta_dataset_loads_exact_pixels(tmp_path):
    labels = make_gta(tmp_path, 3)
    convert(tmp_path, 'gta')
    ds = build(dict(type='GTAVDataset', data_root=str(tmp_path),
                    pipeline=PLAIN_PIPELINE))
    assert len(ds) == 3
    assert ds.metainfo['classes'][13] == 'car'
    assert len(ds.metainfo['classes']) == 19
    item = ds[1]
    image = rgb(tmp_path / 'images' / '00002.png')
    # mmcv loads BGR; PackSegInputs makes it CHW.
    np.testing.assert_array_equal(item['inputs'].numpy(),
                                  image[:, :, ::-1].transpose(2, 0, 1))
    np.testing.assert_array_equal(
        item['data_samples'].gt_sem_seg.data[0].numpy(),
        expected_train_ids(labels[1], LABEL_ID_TO_TRAIN_ID))
    assert item['data_samples'].seg_map_path.endswith(
        osp.join('labels', '00002_labelTrainIds.png'))


def test_gta_listing_takes_only_images(tmp_path):
    """labels/ holds originals and trainIds (both .png); images/ may hold
    hidden macOS files: none of them is listed as an image."""
    make_gta(tmp_path, 2)
    convert(tmp_path, 'gta')
    write_rgb(str(tmp_path / 'images' / '._00001.png'),
              np.zeros((2, 2, 3), np.uint8))
    ds = build(dict(type='GTAVDataset', data_root=str(tmp_path),
                    pipeline=PLAIN_PIPELINE))
    assert [osp.basename(ds.get_data_info(i)['img_path'])
            for i in range(len(ds))] == ['00001.png', '00002.png']
    assert [osp.basename(ds.get_data_info(i)['seg_map_path'])
            for i in range(len(ds))] == [
                '00001_labelTrainIds.png', '00002_labelTrainIds.png']


def test_gta_dataset_with_training_pipeline(tmp_path):
    make_gta(tmp_path, 2)
    convert(tmp_path, 'gta')
    ds = build(dict(type='GTAVDataset', data_root=str(tmp_path),
                    pipeline=TRAIN_PIPELINE))
    item = ds[0]
    assert tuple(item['inputs'].shape) == (3, 16, 16)
    seg = item['data_samples'].gt_sem_seg.data
    assert tuple(seg.shape) == (1, 16, 16)
    assert set(seg.unique().tolist()) <= set(range(19)) | {255}


def test_synthia_dataset(tmp_path):
    ids = [(np.arange(20 * 24) % 23).astype(np.uint16).reshape(20, 24)]
    make_synthia(tmp_path, ids)
    convert(tmp_path, 'synthia')
    ds = build(dict(type='SynthiaDataset', data_root=str(tmp_path),
                    pipeline=PLAIN_PIPELINE))
    assert len(ds) == 1
    np.testing.assert_array_equal(
        ds[0]['data_samples'].gt_sem_seg.data[0].numpy(),
        expected_train_ids(ids[0], SYNTHIA_ID_TO_TRAIN_ID))


def test_cityscapes_dataset_on_converted_layout(tmp_path):
    labels = make_cityscapes(tmp_path, num_train=2, num_val=2)
    convert(tmp_path, 'cityscapes')
    ds = build(dict(type='CityscapesDataset', data_root=str(tmp_path),
                    data_prefix=dict(img_path='leftImg8bit/val',
                                     seg_map_path='gtFine/val'),
                    pipeline=PLAIN_PIPELINE))
    assert len(ds) == 2
    np.testing.assert_array_equal(
        ds[1]['data_samples'].gt_sem_seg.data[0].numpy(),
        expected_train_ids(labels['val'][1], LABEL_ID_TO_TRAIN_ID))


def test_size_mismatched_pairs_are_skipped(tmp_path):
    make_gta(tmp_path, 3)
    write_paletted(str(tmp_path / 'labels' / '00002.png'),
                   np.zeros((30, 32), np.uint8))
    convert(tmp_path, 'gta')
    ds = build(dict(type='GTAVDataset', data_root=str(tmp_path),
                    pipeline=PLAIN_PIPELINE))
    assert [osp.basename(ds.get_data_info(i)['img_path'])
            for i in range(len(ds))] == ['00001.png', '00003.png']


def test_split_file(tmp_path):
    make_gta(tmp_path, 3)
    convert(tmp_path, 'gta')
    (tmp_path / 'val.txt').write_text('00003\n00001\n')
    ds = build(dict(type='GTAVDataset', data_root=str(tmp_path),
                    ann_file='val.txt', pipeline=PLAIN_PIPELINE))
    assert [osp.basename(ds.get_data_info(i)['img_path'])
            for i in range(len(ds))] == ['00003.png', '00001.png']


def expect_build_error(cfg, error, *fragments):
    with pytest.raises(error) as err:
        build(cfg)
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)


def test_missing_data_root(tmp_path):
    root = str(tmp_path / 'gta')
    expect_build_error(dict(type='GTAVDataset', data_root=root),
                       FileNotFoundError, root, 'does not exist')


def test_empty_image_folder(tmp_path):
    (tmp_path / 'images').mkdir()
    (tmp_path / 'labels').mkdir()
    expect_build_error(
        dict(type='GTAVDataset', data_root=str(tmp_path)), FileNotFoundError,
        'no "*.png" images', str(tmp_path / 'images'))


def test_unconverted_labels_name_the_converter(tmp_path):
    make_gta(tmp_path, 3)
    expect_build_error(
        dict(type='GTAVDataset', data_root=str(tmp_path)), FileNotFoundError,
        '3 of 3 label(s) have not been converted', '00001_labelTrainIds.png',
        f'python tools/dataset_converters/gta.py {tmp_path}')
    make_synthia(tmp_path / 'syn', [np.zeros((4, 4), np.uint16)])
    expect_build_error(
        dict(type='SynthiaDataset', data_root=str(tmp_path / 'syn')),
        FileNotFoundError,
        f'python tools/dataset_converters/synthia.py {tmp_path / "syn"}')


def test_image_without_any_label(tmp_path):
    make_gta(tmp_path, 2)
    convert(tmp_path, 'gta')
    write_rgb(str(tmp_path / 'images' / '00007.png'),
              np.zeros((24, 32, 3), np.uint8))
    expect_build_error(
        dict(type='GTAVDataset', data_root=str(tmp_path)), FileNotFoundError,
        'have no label at all', '00007_labelTrainIds.png')


def test_unconverted_label_encoding(tmp_path):
    make_gta(tmp_path, 2)
    # Pointing the dataset at the original labelIds instead of trainIds.
    expect_build_error(
        dict(type='GTAVDataset', data_root=str(tmp_path),
             seg_map_suffix='.png'), LabelEncodingError,
        'unconverted label', '00001.png')


def test_colour_train_id_label(tmp_path):
    make_gta(tmp_path, 1)
    convert(tmp_path, 'gta')
    write_rgb(str(tmp_path / 'labels' / '00001_labelTrainIds.png'),
              np.zeros((24, 32, 3), np.uint8))
    expect_build_error(
        dict(type='GTAVDataset', data_root=str(tmp_path)), LabelEncodingError,
        '00001_labelTrainIds.png', 'not an 8-bit trainId label')


def test_building_decodes_at_most_one_label(tmp_path, monkeypatch):
    make_gta(tmp_path, 6)
    convert(tmp_path, 'gta')
    import cv2
    import PIL.Image
    opened = []
    real_open = PIL.Image.open
    monkeypatch.setattr(PIL.Image, 'open',
                        lambda *a, **k: opened.append(a[0]) or real_open(*a,
                                                                         **k))
    monkeypatch.setattr(cv2, 'imread', lambda *a, **k: pytest.fail(
        'cv2.imread called while building the dataset'))
    ds = build(dict(type='GTAVDataset', data_root=str(tmp_path)))
    assert len(ds) == 6
    assert len(opened) == 1 and str(opened[0]).endswith(
        '00001_labelTrainIds.png')
    assert os.path.isfile(opened[0])
