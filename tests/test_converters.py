"""Label converters (mmseg_uda/datasets/conversion.py and the CLIs in
tools/dataset_converters/) on generated files in the real layouts."""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mmseg_uda.datasets import conversion
from mmseg_uda.datasets.conversion import (ConversionError,
                                           LabelEncodingError,
                                           convert_dataset)

from data_utils import (LABEL_ID_TO_TRAIN_ID, SYNTHIA_ID_TO_TRAIN_ID,
                         expected_train_ids, make_cityscapes, make_gta,
                         make_synthia, write_paletted, write_rgb,
                         write_synthia_label)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def convert(root, dataset, **kwargs):
    kwargs.setdefault('progress', False)
    kwargs.setdefault('log', None)
    return convert_dataset(str(root), dataset, **kwargs)


def read(path):
    with Image.open(path) as img:
        return img.mode, np.array(img)


def all_label_ids(shape=(6, 8)):
    """Every byte value 0..47 (all 34 Cityscapes labelIds and some that do
    not exist) in one label."""
    return (np.arange(shape[0] * shape[1]) % 48).astype(np.uint8).reshape(
        shape)


def test_label_id_table_is_cityscapesscripts():
    lut = conversion.label_id_to_train_id_lut()
    expected = np.full(256, 255)
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        expected[label_id] = train_id
    np.testing.assert_array_equal(lut, expected)
    from cityscapesscripts.helpers.labels import labels
    ignored = [lb.id for lb in labels if lb.trainId in (255, -1)]
    assert len(ignored) == 16 and all(lut[i] == 255 for i in ignored if i >= 0)


@pytest.mark.parametrize('paletted', [True, False])
def test_gta_label_ids_to_train_ids_exact(tmp_path, paletted):
    ids = [all_label_ids(), np.full((6, 8), 26, np.uint8)]
    make_gta(tmp_path, ids, paletted=paletted)
    report = convert(tmp_path, 'gta')
    assert (report.converted, report.existing, report.errors) == (2, 0, [])
    for i, label in enumerate(ids, start=1):
        mode, out = read(tmp_path / 'labels' / f'{i:05d}_labelTrainIds.png')
        assert mode == 'L' and out.dtype == np.uint8
        np.testing.assert_array_equal(
            out, expected_train_ids(label, LABEL_ID_TO_TRAIN_ID))
    # Every one of the 34 ids 0..33 occurred; the void ones became 255.
    _, first = read(tmp_path / 'labels' / '00001_labelTrainIds.png')
    assert set(np.unique(first)) == set(range(19)) | {255}


def test_synthia_reads_class_id_from_red_channel(tmp_path):
    ids = (np.arange(6 * 8) % 23).astype(np.uint16).reshape(6, 8)
    make_synthia(tmp_path, [ids])
    report = convert(tmp_path, 'synthia')
    assert report.converted == 1 and not report.errors
    mode, out = read(tmp_path / 'GT' / 'LABELS' / '0000000_labelTrainIds.png')
    assert mode == 'L'
    expected = expected_train_ids(ids, SYNTHIA_ID_TO_TRAIN_ID)
    np.testing.assert_array_equal(out, expected)
    for void_id in (0, 13, 14, 22):  # void, parking-slot, road-work, lanes
        assert (out[ids == void_id] == 255).all()
    assert out[ids == 3][0] == 0 and out[ids == 10][0] == 11


def test_cityscapes_train_and_val(tmp_path):
    labels = make_cityscapes(tmp_path, num_train=2, num_val=1)
    report = convert(tmp_path, 'cityscapes')
    assert report.converted == 3
    for split, city in (('train', 'aachen'), ('val', 'frankfurt')):
        for i, ids in enumerate(labels[split]):
            _, out = read(tmp_path / 'gtFine' / split / city /
                          f'{city}_000000_{i:06d}_gtFine_labelTrainIds.png')
            np.testing.assert_array_equal(
                out, expected_train_ids(ids, LABEL_ID_TO_TRAIN_ID))
    stats = json.loads((tmp_path / 'sample_class_stats.json').read_text())
    assert [s['file'] for s in stats] == [
        f'gtFine/train/aachen/aachen_000000_{i:06d}_gtFine_labelTrainIds.png'
        for i in range(2)
    ]


def test_class_statistics_files(tmp_path):
    a = np.full((4, 5), 7, np.uint8)  # road
    a[0, :] = 26  # car: 5 pixels
    a[1, 0] = 0  # unlabelled: not counted
    b = np.full((4, 5), 23, np.uint8)  # sky
    b[3, :2] = 26
    make_gta(tmp_path, [a, b])
    convert(tmp_path, 'gta')
    stats = json.loads((tmp_path / 'sample_class_stats.json').read_text())
    assert stats == [
        {'file': 'labels/00001_labelTrainIds.png', '0': 14, '13': 5},
        {'file': 'labels/00002_labelTrainIds.png', '10': 18, '13': 2},
    ]
    swc = json.loads((tmp_path / 'samples_with_class.json').read_text())
    assert swc == {
        '0': [['labels/00001_labelTrainIds.png', 14]],
        '10': [['labels/00002_labelTrainIds.png', 18]],
        '13': [['labels/00001_labelTrainIds.png', 5],
               ['labels/00002_labelTrainIds.png', 2]],
    }


def test_size_mismatch_is_skipped_and_listed(tmp_path):
    make_gta(tmp_path, 3)
    write_paletted(str(tmp_path / 'labels' / '00002.png'),
                   np.full((25, 32), 7, np.uint8))
    lines = []
    report = convert(tmp_path, 'gta', log=lines.append)
    assert report.converted == 2
    assert not (tmp_path / 'labels' / '00002_labelTrainIds.png').exists()
    record = json.loads((tmp_path / 'size_mismatch.json').read_text())
    assert record == {
        'rule': 'skip',
        'pairs': [{
            'image': 'images/00002.png',
            'label': 'labels/00002.png',
            'image_size': [24, 32],
            'label_size': [25, 32],
            'action': 'skipped'
        }]
    }
    assert any('labels/00002.png' in line and 'skipped' in line
               for line in lines)
    assert 'size-mismatched 1 (skipped 1, resized 0)' in lines[-1]
    stats = json.loads((tmp_path / 'sample_class_stats.json').read_text())
    assert [s['file'] for s in stats] == [
        'labels/00001_labelTrainIds.png', 'labels/00003_labelTrainIds.png'
    ]


def test_size_mismatch_resize_rule(tmp_path):
    make_gta(tmp_path, 1, size=(4, 6))
    label = np.array([[7, 26]], np.uint8).repeat(8, 0).repeat(6, 1)  # 8x12
    write_paletted(str(tmp_path / 'labels' / '00001.png'), label)
    report = convert(tmp_path, 'gta', size_mismatch='resize')
    assert report.converted == 1
    _, out = read(tmp_path / 'labels' / '00001_labelTrainIds.png')
    assert out.shape == (4, 6)
    np.testing.assert_array_equal(out[:, :3], 0)
    np.testing.assert_array_equal(out[:, 3:], 13)
    record = json.loads((tmp_path / 'size_mismatch.json').read_text())
    assert record['rule'] == 'resize'
    assert record['pairs'][0]['action'] == 'resized'


def test_unpaired_files_are_reported_by_name(tmp_path):
    make_gta(tmp_path, 2)
    os.remove(tmp_path / 'labels' / '00002.png')
    write_paletted(str(tmp_path / 'labels' / '00009.png'),
                   np.zeros((24, 32), np.uint8))
    lines = []
    report = convert(tmp_path, 'gta', log=lines.append)
    assert report.images_without_label == ['images/00002.png']
    assert report.labels_without_image == ['labels/00009.png']
    assert 'image without label: images/00002.png' in lines
    assert 'label without image: labels/00009.png' in lines
    assert report.converted == 1


def snapshot(root):
    """{relative path: mtime_ns} of every file below root."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = osp.join(dirpath, name)
            out[osp.relpath(path, root)] = os.stat(path).st_mtime_ns
    return out


def test_second_run_rewrites_nothing(tmp_path):
    make_gta(tmp_path, 3)
    write_paletted(str(tmp_path / 'labels' / '00003.png'),
                   np.full((25, 32), 7, np.uint8))
    first = convert(tmp_path, 'gta')
    # Push every mtime into the past so a rewrite cannot go unnoticed.
    for rel in snapshot(tmp_path):
        os.utime(tmp_path / rel, ns=(10**18, 10**18))
    before = snapshot(tmp_path)
    second = convert(tmp_path, 'gta')
    assert snapshot(tmp_path) == before
    assert (first.converted, first.existing) == (2, 0)
    assert (second.converted, second.existing) == (0, 2)
    assert len(second.mismatches) == 1


def test_stale_temporary_file_does_not_count_as_done(tmp_path):
    make_gta(tmp_path, 2)
    convert(tmp_path, 'gta')
    # An interrupted run: the output never got its final name, only a
    # half-written temporary file exists.
    out = tmp_path / 'labels' / '00001_labelTrainIds.png'
    good = out.read_bytes()
    out.unlink()
    stale = tmp_path / 'labels' / '.00001_labelTrainIds.png.x1y2.tmp'
    stale.write_bytes(good[:20])
    report = convert(tmp_path, 'gta')
    assert (report.converted, report.existing) == (1, 1)
    assert out.read_bytes() == good
    assert not stale.exists()


def test_undecodable_output_is_rewritten(tmp_path):
    make_gta(tmp_path, 1)
    convert(tmp_path, 'gta')
    out = tmp_path / 'labels' / '00001_labelTrainIds.png'
    good = out.read_bytes()
    out.write_bytes(good[:30])  # truncated by some other tool
    assert convert(tmp_path, 'gta').converted == 1
    assert out.read_bytes() == good


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / 'x_labelTrainIds.png'

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(conversion.os, 'replace', interrupted)
    with pytest.raises(KeyboardInterrupt):
        conversion.write_png_atomic(str(target), np.zeros((4, 4), np.uint8))
    assert os.listdir(tmp_path) == []


def test_rgb_gta_label_is_rejected_by_name(tmp_path):
    make_gta(tmp_path, 2)
    write_rgb(str(tmp_path / 'labels' / '00002.png'),
              np.zeros((24, 32, 3), np.uint8))
    with pytest.raises(ConversionError) as err:
        convert(tmp_path, 'gta')
    msg = str(err.value)
    assert 'labels/00002.png' in msg and 'single-channel' in msg
    assert 'RGB' in msg
    assert not (tmp_path / 'sample_class_stats.json').exists()
    # The good pair was still converted.
    assert (tmp_path / 'labels' / '00001_labelTrainIds.png').exists()


@pytest.mark.parametrize('kind', ['8bit', 'single_channel', 'bad_ids'])
def test_bad_synthia_labels_are_rejected(tmp_path, kind):
    ids = np.full((4, 6), 3, np.uint16)
    make_synthia(tmp_path, [ids])
    path = str(tmp_path / 'GT' / 'LABELS' / '0000000.png')
    import cv2
    if kind == '8bit':
        cv2.imwrite(path, np.zeros((4, 6, 3), np.uint8))
        expected = '16-bit 3-channel'
    elif kind == 'single_channel':
        cv2.imwrite(path, np.full((4, 6), 3, np.uint16))
        expected = '1 channel'
    else:
        ids[0, 0] = 976
        write_synthia_label(path, ids)
        expected = 'wrong folder'
    with pytest.raises(ConversionError) as err:
        convert(tmp_path, 'synthia')
    assert 'GT/LABELS/0000000.png' in str(err.value)
    assert expected in str(err.value)
    with pytest.raises(LabelEncodingError):
        conversion.read_synthia_label(path)


def test_missing_data_root_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere'):
        convert(tmp_path / 'nowhere', 'gta')
    (tmp_path / 'images').mkdir()
    with pytest.raises(FileNotFoundError, match='label folder'):
        convert(tmp_path, 'gta')
    (tmp_path / 'labels').mkdir()
    with pytest.raises(FileNotFoundError, match='no image/label pairs'):
        convert(tmp_path, 'gta')


def test_parallel_run_matches_serial(tmp_path):
    make_gta(tmp_path / 'a', 6, seed=3)
    make_gta(tmp_path / 'b', 6, seed=3)
    convert(tmp_path / 'a', 'gta', nproc=1)
    convert(tmp_path / 'b', 'gta', nproc=2)
    for name in ('sample_class_stats.json', 'samples_with_class.json',
                 'labels/00004_labelTrainIds.png'):
        assert (tmp_path / 'a' / name).read_bytes() == \
            (tmp_path / 'b' / name).read_bytes()


def test_command_line(tmp_path):
    make_gta(tmp_path, 2)
    env = dict(os.environ, PYTHONPATH=REPO)
    script = osp.join(REPO, 'tools', 'dataset_converters', 'gta.py')
    done = subprocess.run(
        [sys.executable, script,
         str(tmp_path), '--nproc', '1', '--no-progress'],
        capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == (
        'converted 2, skipped-existing 0, size-mismatched 0 (skipped 0, '
        'resized 0), unpaired 0, errors 0')
    # Errors end with a message and exit code 1, not a traceback.
    assert conversion.converter_main(
        'gta', 'x', [str(tmp_path / 'missing'), '--no-progress']) == 1
