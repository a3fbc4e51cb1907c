"""The built-in demo data (mmseg_uda/datasets/demo.py,
tools/make_demo_data.py): real layouts and encodings, accepted by the
converters, datasets and the demo config; deterministic; few, large,
balanced classes."""
import hashlib
import os
import os.path as osp
import runpy

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

from mmseg_uda.datasets import demo
from mmseg_uda.registry import DATASETS

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# road, building, vegetation, sky, person, car
DEMO_LABEL_IDS = {7, 11, 21, 23, 24, 26}


@pytest.fixture(autouse=True)
def mmseg_scope():
    init_default_scope('mmseg')


def make_demo(out, *args):
    tool = runpy.run_path(osp.join(REPO, 'tools', 'make_demo_data.py'))
    assert tool['main']([str(out), *args]) == 0


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    out = tmp_path_factory.mktemp('demo')
    make_demo(out, '--num-train', '6', '--num-val', '2', '--nproc', '1')
    return out


def test_layout_and_encodings(demo_root):
    gta, cs = demo_root / 'gta', demo_root / 'cityscapes'
    assert sorted(os.listdir(gta / 'images')) == [
        f'{i:05d}.png' for i in range(1, 9)
    ]
    assert (gta / 'train.txt').read_text().split() == [
        f'{i:05d}' for i in range(1, 7)
    ]
    assert (gta / 'val.txt').read_text().split() == ['00007', '00008']
    with Image.open(gta / 'images' / '00003.png') as img:
        assert (img.mode, img.size) == ('RGB', (256, 144))
    with Image.open(gta / 'labels' / '00003.png') as lab:
        assert (lab.mode, lab.size) == ('P', (256, 144))
        assert set(np.unique(np.array(lab))) <= DEMO_LABEL_IDS
    stem = 'democity_000000_000001'
    for split, count in (('train', 6), ('val', 2)):
        names = sorted(os.listdir(cs / 'leftImg8bit' / split / 'democity'))
        assert len(names) == count
    with Image.open(cs / 'leftImg8bit' / 'val' / 'democity' /
                    f'{stem}_leftImg8bit.png') as img:
        assert (img.mode, img.size) == ('RGB', (256, 128))
    with Image.open(cs / 'gtFine' / 'val' / 'democity' /
                    f'{stem}_gtFine_labelIds.png') as lab:
        assert (lab.mode, lab.size) == ('L', (256, 128))
        assert set(np.unique(np.array(lab))) <= DEMO_LABEL_IDS
    # make_demo_data.py ran the real converters.
    with Image.open(gta / 'labels' / '00003_labelTrainIds.png') as lab:
        assert set(np.unique(np.array(lab))) <= {0, 2, 8, 10, 11, 13}
    assert (gta / 'sample_class_stats.json').is_file()
    assert (cs / 'gtFine' / 'train' / 'democity' /
            f'{stem}_gtFine_labelTrainIds.png').is_file()


def test_demo_config_builds_on_demo_data(demo_root):
    cfg = Config.fromfile(
        osp.join(REPO, 'configs', '_base_', 'datasets', 'demo_gta2cs.py'))
    train = cfg.train_dataloader.dataset
    train.source.data_root = str(demo_root / 'gta')
    train.target.data_root = str(demo_root / 'cityscapes')
    train.rare_class_sampling = dict(min_pixels=1000)
    ds = DATASETS.build(train)
    assert (ds.num_source, ds.num_target) == (6, 6)
    item = ds[(0, 1, 7)]
    assert item['inputs']['source'].shape == (3, 128, 128)
    assert item['inputs']['target'].shape == (3, 128, 128)
    assert 'gt_sem_seg' not in item['data_samples']['target']
    assert cfg.train_dataloader.batch_size == 4
    for key in ('val_dataloader', 'source_val_dataloader'):
        val_cfg = cfg[key].dataset
        val_cfg.data_root = str(demo_root / (
            'cityscapes' if key == 'val_dataloader' else 'gta'))
        val = DATASETS.build(val_cfg)
        assert len(val) == 2
        sample = val[1]['data_samples']
        assert sample.gt_sem_seg.data.shape[1:] == sample.ori_shape


def file_hashes(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = osp.join(dirpath, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path, root)] = hashlib.sha256(
                    f.read()).hexdigest()
    return out


def test_deterministic_for_a_seed(tmp_path):
    small = ['--num-train', '3', '--num-val', '1', '--no-convert']
    make_demo(tmp_path / 'a', *small, '--nproc', '1')
    make_demo(tmp_path / 'b', *small, '--nproc', '2')
    make_demo(tmp_path / 'c', *small, '--nproc', '1', '--seed', '1')
    a, b, c = (file_hashes(tmp_path / k) for k in 'abc')
    assert len(a) == 4 + 4 + 2 + 2 + 4 + 2  # gta images/labels/splits, cs
    assert a == b
    changed = [k for k in a if k.endswith('.png') and a[k] != c[k]]
    assert len(changed) == len([k for k in a if k.endswith('.png')])


def test_class_shares_are_balanced():
    """Six classes, none dominant (background well under two thirds, so a
    small model does not collapse to "all background"), every class
    present in a sizeable share in both domains."""
    for sample in (demo.make_source_sample, demo.make_target_sample):
        counts = np.zeros(256)
        for i in range(30):
            _, label_ids = sample(0, i)
            counts += np.bincount(label_ids.ravel(), minlength=256)
        shares = counts / counts.sum()
        assert set(np.nonzero(shares)[0]) == DEMO_LABEL_IDS
        present = shares[sorted(DEMO_LABEL_IDS)]
        assert present.min() > 0.05 and present.max() < 0.3, present


def test_domains_share_geometry_not_appearance():
    """Same scene model in both domains (the same seed/index draws the same
    layout up to the image height), different appearance statistics."""
    src_img, src_lab = demo.make_source_sample(0, 0, size=(128, 256))
    rng = np.random.default_rng([0, 0, 0])
    scene = demo.make_scene(rng, 128, 256)
    np.testing.assert_array_equal(demo.DEMO_LABEL_IDS[scene.labels()],
                                  src_lab)
    target = demo.render_target(scene, rng, demo.load_textures())
    assert target.shape == src_img.shape
    # Source regions are flat colours (plus faint noise and gradients),
    # target regions are textured: compare the spread within each region.
    def region_spread(img):
        spreads = [
            img[scene.index == i].std(axis=0).mean()
            for i in np.unique(scene.index)
            if (scene.index == i).sum() > 100
        ]
        return float(np.mean(spreads))

    source_spread = region_spread(src_img)
    assert source_spread < 8
    assert region_spread(target) > 2 * source_spread
