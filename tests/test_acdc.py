"""ACDC and Dark Zurich targets: the converters (validation, trainIds written
only where missing) and the datasets on generated files in the real
download layouts, and the Cityscapes -> ACDC / Dark Zurich dataset bases."""
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

import mmseg_uda  # noqa: F401
from mmseg_uda.datasets import ACDCDataset
from mmseg_uda.datasets.conversion import (ConversionError, LabelEncodingError,
                                           convert_dataset)
from mmseg_uda.registry import DATASETS

from data_utils import (LABEL_ID_TO_TRAIN_ID, expected_train_ids,
                         random_image, write_gray, write_rgb)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SIZE = (12, 20)


def make_acdc(root, per_split=2, ship_train_ids=True, seed=0,
              conditions=('fog', 'night', 'rain', 'snow')):
    """ACDC as downloaded: rgb_anon/<cond>/<split>/<seq>/*_rgb_anon.png,
    gt/<cond>/<split>/<seq>/*_gt_{labelIds,labelTrainIds,labelColor,
    invIds}.png, plus train_ref images and the unlabelled test split.
    Returns {(cond, split): [labelIds arrays]}."""
    rng = np.random.default_rng(seed)
    out = {}
    for cond in conditions:
        for split in ('train', 'val', 'test'):
            seq = f'GOPR0{len(cond)}{len(split)}'
            out[(cond, split)] = []
            for i in range(per_split):
                stem = f'{seq}_frame_{i:06d}'
                write_rgb(osp.join(root, 'rgb_anon', cond, split, seq,
                                   f'{stem}_rgb_anon.png'),
                          random_image(rng, *SIZE))
                if split == 'test':
                    continue
                write_rgb(osp.join(root, 'rgb_anon', cond, f'{split}_ref',
                                   seq, f'{stem}_ref_anon.png'),
                          random_image(rng, *SIZE))
                ids = rng.integers(0, 34, SIZE, dtype=np.uint8)
                gt = osp.join(root, 'gt', cond, split, seq, stem)
                write_gray(f'{gt}_gt_labelIds.png', ids)
                if ship_train_ids:
                    write_gray(f'{gt}_gt_labelTrainIds.png',
                               expected_train_ids(ids, LABEL_ID_TO_TRAIN_ID))
                write_rgb(f'{gt}_gt_labelColor.png', random_image(rng, *SIZE))
                write_gray(f'{gt}_gt_invIds.png', ids)
                out[(cond, split)].append(ids)
    return out


def make_dark_zurich(root, num_val=2, num_train=3, seed=0):
    """Dark Zurich as downloaded: rgb_anon/train/{day,night,twilight}/<seq>
    (no labels), rgb_anon/val/night/<seq> + gt/val/night/<seq>
    (*_gt_labelIds.png, *_gt_labelColor.png, *_gt_invGray.png; the
    trainIds are written by the converter here), rgb_anon/val_ref/day."""
    rng = np.random.default_rng(seed)
    for time in ('day', 'night', 'twilight'):
        for i in range(num_train):
            write_rgb(osp.join(root, 'rgb_anon', 'train', time, 'GOPR0348',
                               f'GOPR0348_frame_{i:06d}_rgb_anon.png'),
                      random_image(rng, *SIZE))
    ids_list = []
    for i in range(num_val):
        stem = f'GOPR0356_frame_{i:06d}'
        write_rgb(osp.join(root, 'rgb_anon', 'val', 'night', 'GOPR0356',
                           f'{stem}_rgb_anon.png'), random_image(rng, *SIZE))
        write_rgb(osp.join(root, 'rgb_anon', 'val_ref', 'day', 'GOPR0351',
                           f'{stem}_ref_rgb_anon.png'),
                  random_image(rng, *SIZE))
        ids = rng.integers(0, 34, SIZE, dtype=np.uint8)
        gt = osp.join(root, 'gt', 'val', 'night', 'GOPR0356', stem)
        write_gray(f'{gt}_gt_labelIds.png', ids)
        write_rgb(f'{gt}_gt_labelColor.png', random_image(rng, *SIZE))
        write_gray(f'{gt}_gt_invGray.png', ids)
        ids_list.append(ids)
    return ids_list


def convert(root, dataset, **kwargs):
    return convert_dataset(str(root), dataset, progress=False, log=None,
                           **kwargs)


def read(path):
    with Image.open(path) as img:
        return np.array(img)


# --------------------------------------------------------------- converters
def test_acdc_converter_validates_shipped_and_writes_missing(tmp_path):
    ids = make_acdc(tmp_path, ship_train_ids=True)
    report = convert(tmp_path, 'acdc')
    # 4 conditions x (train, val) x 2 images, all shipped: reused
    assert (report.converted, report.existing, report.errors) == (0, 16, [])
    assert not report.stats_written
    # remove two shipped trainId labels: the converter writes exactly them
    for cond in ('fog', 'snow'):
        seq = f'GOPR0{len(cond)}5'
        path = tmp_path / 'gt' / cond / 'train' / seq / \
            f'{seq}_frame_000001_gt_labelTrainIds.png'
        path.unlink()
    report = convert(tmp_path, 'acdc')
    assert (report.converted, report.existing) == (2, 14)
    seq = 'GOPR035'
    out = read(tmp_path / 'gt' / 'fog' / 'train' / seq /
               f'{seq}_frame_000001_gt_labelTrainIds.png')
    np.testing.assert_array_equal(
        out, expected_train_ids(ids[('fog', 'train')][1],
                                LABEL_ID_TO_TRAIN_ID))


def test_acdc_converter_reports_image_without_label_and_bad_label(tmp_path):
    make_acdc(tmp_path, ship_train_ids=False)
    seq = 'GOPR045'
    (tmp_path / 'gt' / 'rain' / 'train' / seq /
     f'{seq}_frame_000000_gt_labelIds.png').unlink()
    report = convert(tmp_path, 'acdc')
    assert report.images_without_label == [
        f'rgb_anon/rain/train/{seq}/{seq}_frame_000000_rgb_anon.png']
    # an RGB (colour) labelIds file is an encoding error naming the file
    bad = tmp_path / 'gt' / 'night' / 'val' / 'GOPR053' / \
        'GOPR053_frame_000000_gt_labelIds.png'
    write_rgb(str(bad), np.zeros(SIZE + (3, ), np.uint8) + 7)
    (tmp_path / 'gt' / 'night' / 'val' / 'GOPR053' /
     'GOPR053_frame_000000_gt_labelTrainIds.png').unlink()
    with pytest.raises(ConversionError, match='GOPR053_frame_000000'):
        convert(tmp_path, 'acdc')


def test_acdc_converter_missing_condition_folder_is_clear(tmp_path):
    make_acdc(tmp_path, conditions=('fog', 'night', 'rain'))
    with pytest.raises(FileNotFoundError, match='rgb_anon/snow/train'):
        convert(tmp_path, 'acdc')


def test_dark_zurich_converter_writes_val_train_ids(tmp_path):
    ids = make_dark_zurich(tmp_path)
    report = convert(tmp_path, 'dark_zurich')
    assert (report.converted, report.existing, report.errors) == (2, 0, [])
    for i, label in enumerate(ids):
        out = read(tmp_path / 'gt' / 'val' / 'night' / 'GOPR0356' /
                   f'GOPR0356_frame_{i:06d}_gt_labelTrainIds.png')
        np.testing.assert_array_equal(
            out, expected_train_ids(label, LABEL_ID_TO_TRAIN_ID))
    assert convert(tmp_path, 'dark_zurich').existing == 2  # idempotent


def test_converter_cli(tmp_path, capsys):
    """The script once (a subprocess is slow to import torch); the shared
    command line in-process for both datasets."""
    from mmseg_uda.datasets.conversion import converter_main
    make_dark_zurich(tmp_path / 'dz')
    proc = subprocess.run(
        [sys.executable, 'tools/dataset_converters/dark_zurich.py',
         str(tmp_path / 'dz'), '--no-progress'],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'converted 2' in proc.stdout and 'errors 0' in proc.stdout
    make_acdc(tmp_path / 'acdc')
    assert converter_main('acdc', '', [str(tmp_path / 'acdc'),
                                       '--no-progress']) == 0
    assert 'skipped-existing 16' in capsys.readouterr().out
    assert converter_main('acdc', '', [str(tmp_path / 'nope')]) == 1
    assert 'does not exist' in capsys.readouterr().out


# ----------------------------------------------------------------- datasets
def test_acdc_dataset_merges_conditions_in_download_layout(tmp_path):
    make_acdc(tmp_path)
    ds = ACDCDataset(data_root=str(tmp_path), split='train', pipeline=[])
    assert len(ds) == 8  # 4 conditions x 2 (no _ref, no test images)
    paths = [ds.get_data_info(i)['img_path'] for i in range(len(ds))]
    assert [p.split('/rgb_anon/')[1].split('/')[0] for p in paths] == \
        ['fog'] * 2 + ['night'] * 2 + ['rain'] * 2 + ['snow'] * 2
    info = ds.get_data_info(0)
    assert info['seg_map_path'].endswith(
        'gt/fog/train/GOPR035/GOPR035_frame_000000_gt_labelTrainIds.png')
    assert osp.isfile(info['seg_map_path'])
    night_val = ACDCDataset(data_root=str(tmp_path), split='val',
                            conditions=['night'], pipeline=[])
    assert len(night_val) == 2
    assert all('/night/val/' in night_val.get_data_info(i)['img_path']
               for i in range(2))
    # conditions=None: a plain (e.g. restructured) folder
    plain = ACDCDataset(
        data_root=str(tmp_path), conditions=None,
        data_prefix=dict(img_path='rgb_anon/rain/val',
                         seg_map_path='gt/rain/val'), pipeline=[])
    assert len(plain) == 2
    assert ds.metainfo['classes'][0] == 'road' and len(
        ds.metainfo['classes']) == 19


def test_acdc_dataset_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match='split'):
        ACDCDataset(data_root=str(tmp_path), split='test', pipeline=[])
    with pytest.raises(ValueError, match='conditions'):
        ACDCDataset(data_root=str(tmp_path), conditions=['dusk'],
                    pipeline=[])
    make_acdc(tmp_path, ship_train_ids=False)
    with pytest.raises(FileNotFoundError,
                       match='tools/dataset_converters/acdc.py'):
        ACDCDataset(data_root=str(tmp_path), pipeline=[])
    # labelIds given as the trainId suffix: caught on the first label
    with pytest.raises(LabelEncodingError, match='trainId'):
        ACDCDataset(data_root=str(tmp_path), pipeline=[],
                    seg_map_suffix='_gt_labelIds.png')


def test_dark_zurich_layout_read_by_mmseg_dataset(tmp_path):
    make_dark_zurich(tmp_path)
    convert(tmp_path, 'dark_zurich')
    init_default_scope('mmseg')
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/_base_/datasets/cs2darkzurich_1024x1024.py'))
    val = cfg.val_dataloader.dataset
    val.data_root = str(tmp_path)
    ds = DATASETS.build(val)
    assert len(ds) == 2
    item = ds[0]
    assert item['inputs'].shape[-2:] == (1080, 1800)  # fits 1920x1080
    label = item['data_samples'].gt_sem_seg.data
    assert label.shape[-2:] == SIZE  # labels stay at full resolution
    target = cfg.train_dataloader.dataset.target
    target.data_root = str(tmp_path)
    train = DATASETS.build(target)
    assert len(train) == 3  # night only
    assert train[0]['inputs'].shape[-2:] == (1024, 1024)


def test_cs2acdc_base_builds_the_uda_dataset(tmp_path):
    from data_utils import make_cityscapes
    make_acdc(tmp_path / 'acdc')
    make_cityscapes(str(tmp_path / 'cityscapes'))
    convert(tmp_path / 'cityscapes', 'cityscapes')
    init_default_scope('mmseg')
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/_base_/datasets/cs2acdc_1024x1024.py'))
    uda = cfg.train_dataloader.dataset
    uda.source.data_root = str(tmp_path / 'cityscapes')
    uda.target.data_root = str(tmp_path / 'acdc')
    # RCS on the Cityscapes source (the converter's train statistics);
    # min_pixels lowered for the 12x20 images
    uda.rare_class_sampling.min_pixels = 1
    ds = DATASETS.build(uda)
    item = ds[0]
    assert item['inputs']['source'].shape[-2:] == (1024, 1024)
    assert item['inputs']['target'].shape[-2:] == (1024, 1024)
    assert 'gt_sem_seg' not in item['data_samples']['target']
    val = cfg.val_dataloader.dataset
    val.data_root = str(tmp_path / 'acdc')
    assert len(DATASETS.build(val)) == 8
