"""UDADataset pairing, UDAPairSampler determinism / rank slicing, and
rare-class sampling (DAFormer RCS, lhoyer/DAFormer
``mmseg/datasets/uda_dataset.py``)."""
import json
import random

import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from PIL import Image
from torch.utils.data import DataLoader

from data_utils import (LABEL_ID_TO_TRAIN_ID, expected_train_ids,
                        make_cityscapes, make_gta)
from mmseg_uda.datasets import UDADataset, UDAPairSampler, samplers
from mmseg_uda.datasets.conversion import convert_dataset
from mmseg_uda.registry import DATA_SAMPLERS, DATASETS

PLAIN_SOURCE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
PLAIN_TARGET = [dict(type='LoadImageFromFile'), dict(type='PackSegInputs')]
RANDOM_SOURCE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomCrop', crop_size=(16, 16), cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
RANDOM_TARGET = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomCrop', crop_size=(12, 12)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]


@pytest.fixture(autouse=True)
def mmseg_scope():
    init_default_scope('mmseg')


@pytest.fixture(scope='module')
def roots(tmp_path_factory):
    """A converted 5-image GTA root and an unconverted 3-image Cityscapes
    root (the target needs no labels)."""
    base = tmp_path_factory.mktemp('uda')
    labels = make_gta(base / 'gta', 5, size=(24, 32), seed=1)
    convert_dataset(str(base / 'gta'), 'gta', log=None, progress=False)
    make_cityscapes(base / 'cs', num_train=3, num_val=1, size=(16, 32))
    return dict(gta=str(base / 'gta'), cs=str(base / 'cs'), labels=labels)


def source_cfg(root, pipeline=PLAIN_SOURCE):
    return dict(type='GTAVDataset', data_root=root, pipeline=pipeline)


def target_cfg(root, pipeline=PLAIN_TARGET, **kwargs):
    return dict(type='CityscapesDataset', data_root=root,
                data_prefix=dict(img_path='leftImg8bit/train'),
                pipeline=pipeline, **kwargs)


def uda(roots, **kwargs):
    cfg = dict(type='UDADataset', source=source_cfg(roots['gta']),
               target=target_cfg(roots['cs']))
    cfg.update(kwargs)
    return DATASETS.build(cfg)


def bgr_chw(path):
    return np.array(Image.open(path).convert('RGB'))[:, :, ::-1].transpose(
        2, 0, 1)


def test_item_pairs_source_and_target(roots):
    ds = uda(roots)
    assert (len(ds), ds.num_source, ds.num_target) == (5, 5, 3)
    assert ds.metainfo['classes'] == ds.source.metainfo['classes']
    item = ds[(2, 1, 123)]
    np.testing.assert_array_equal(item['inputs']['source'].numpy(),
                                  bgr_chw(f'{roots["gta"]}/images/00003.png'))
    np.testing.assert_array_equal(
        item['inputs']['target'].numpy(),
        bgr_chw(f'{roots["cs"]}/leftImg8bit/train/aachen/'
                'aachen_000000_000001_leftImg8bit.png'))
    source, target = item['data_samples']['source'], item['data_samples'][
        'target']
    np.testing.assert_array_equal(
        source.gt_sem_seg.data[0].numpy(),
        expected_train_ids(roots['labels'][2], LABEL_ID_TO_TRAIN_ID))
    assert 'gt_sem_seg' not in target
    # Plain int index (other samplers): i % |S|, i % |T|.
    plain = ds[7]
    assert plain['data_samples']['source'].img_path.endswith('00003.png')
    assert plain['data_samples']['target'].img_path.endswith(
        'aachen_000000_000001_leftImg8bit.png')


def test_collated_batch_layout(roots):
    ds = uda(roots)
    batch = pseudo_collate([ds[(0, 0, 1)], ds[(1, 2, 2)]])
    assert set(batch) == {'inputs', 'data_samples'}
    assert set(batch['inputs']) == set(batch['data_samples']) == {
        'source', 'target'
    }
    assert len(batch['inputs']['source']) == 2
    assert batch['inputs']['target'][1].shape == (3, 16, 32)
    assert batch['data_samples']['target'][1].img_path.endswith(
        'aachen_000000_000002_leftImg8bit.png')


def test_source_only_items(roots):
    ds = uda(roots, target=None)
    assert (len(ds), ds.num_source, ds.num_target) == (5, 5, 0)
    triples = take(UDAPairSampler(ds, seed=2), 6)
    assert [t[1] for t in triples] == [None] * 6
    assert sorted(t[0] for t in triples[:5]) == list(range(5))
    batch = pseudo_collate([ds[t] for t in triples[:2]])
    assert set(batch['inputs']) == set(batch['data_samples']) == {'source'}
    assert batch['data_samples']['source'][1].img_path.endswith(
        f'{triples[1][0] + 1:05d}.png')
    assert set(ds[3]['inputs']) == {'source'}


def test_target_labels_are_refused(roots):
    with_labels = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='PackSegInputs')
    ]
    message = 'remove LoadAnnotations from the target pipeline'
    with pytest.raises(ValueError, match=message):
        uda(roots, target=target_cfg(roots['cs'], with_labels))
    built = DATASETS.build(target_cfg(roots['cs'], with_labels))
    with pytest.raises(ValueError, match=message):
        UDADataset(source=source_cfg(roots['gta']), target=built)


def test_class_lists_must_agree(roots):
    target = target_cfg(
        roots['cs'], metainfo=dict(classes=('road', 'sidewalk')))
    with pytest.raises(ValueError) as err:
        uda(roots, target=target)
    msg = str(err.value)
    assert "source (GTAVDataset): ['road', 'sidewalk', 'building'" in msg
    assert "target (CityscapesDataset): ['road', 'sidewalk']" in msg


def test_missing_or_empty_target(roots, tmp_path):
    with pytest.raises(FileNotFoundError, match='target data_root'):
        uda(roots, target=target_cfg(str(tmp_path / 'nope')))
    (tmp_path / 'leftImg8bit' / 'train').mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match='target dataset .* is empty'):
        uda(roots, target=target_cfg(str(tmp_path)))


def test_global_random_state_is_restored(roots):
    ds = uda(roots, source=source_cfg(roots['gta'], RANDOM_SOURCE))
    np.random.seed(5)
    random.seed(5)
    torch.manual_seed(5)
    before = (np.random.get_state()[1].copy(), random.getstate(),
              torch.get_rng_state().clone())
    first = ds[(1, 1, 77)]
    after = (np.random.get_state()[1], random.getstate(),
             torch.get_rng_state())
    np.testing.assert_array_equal(before[0], after[0])
    assert before[1] == after[1]
    assert torch.equal(before[2], after[2])
    np.random.rand(10)  # whatever happened before must not matter
    again = ds[(1, 1, 77)]
    assert torch.equal(first['inputs']['source'], again['inputs']['source'])


def take(sampler, n):
    it = iter(sampler)
    return [next(it) for _ in range(n)]


def test_sampler_streams(roots):
    ds = uda(roots)
    sampler = DATA_SAMPLERS.build(
        dict(type='UDAPairSampler', shuffle=True), default_args=dict(
            dataset=ds, seed=3))
    triples = take(sampler, 15)
    src = [t[0] for t in triples]
    tgt = [t[1] for t in triples]
    # Each domain is a sequence of permutations of its own size.
    for k in range(3):
        assert sorted(src[5 * k:5 * k + 5]) == list(range(5))
    for k in range(5):
        assert sorted(tgt[3 * k:3 * k + 3]) == list(range(3))
    assert src[:5] != src[5:10] or src[5:10] != src[10:15]
    seeds = [t[2] for t in triples]
    assert all(0 <= s < 2**32 for s in seeds) and len(set(seeds)) == 15
    # Same seed, same stream; other seed, other stream.
    assert take(UDAPairSampler(ds, seed=3), 15) == triples
    assert take(UDAPairSampler(ds, seed=4), 15) != triples
    assert len(sampler) == 5
    ordered = take(UDAPairSampler(ds, shuffle=False, seed=3), 7)
    assert [t[0] for t in ordered] == [0, 1, 2, 3, 4, 0, 1]
    assert [t[1] for t in ordered] == [0, 1, 2, 0, 1, 2, 0]


def test_sampler_domains_are_independent(roots, tmp_path):
    """The source stream does not depend on the target's size."""
    make_cityscapes(tmp_path, num_train=7, num_val=0, size=(8, 8))
    other = uda(roots, target=target_cfg(str(tmp_path)))
    a = take(UDAPairSampler(uda(roots), seed=11), 20)
    b = take(UDAPairSampler(other, seed=11), 20)
    assert [t[0] for t in a] == [t[0] for t in b]
    assert [t[2] for t in a] == [t[2] for t in b]
    assert sorted(t[1] for t in b[:7]) == list(range(7))


def test_sampler_rank_slicing(roots, monkeypatch):
    ds = uda(roots)
    full = take(UDAPairSampler(ds, seed=9), 20)
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setattr(samplers, 'get_dist_info', lambda r=rank: (r, 2))
        per_rank.append(take(UDAPairSampler(ds, seed=9), 10))
    assert per_rank[0] == full[0::2] and per_rank[1] == full[1::2]
    assert per_rank[0] != per_rank[1]


def _seed_worker(worker_id):
    np.random.seed(1000 + worker_id)
    random.seed(1000 + worker_id)
    torch.manual_seed(1000 + worker_id)


def batches(ds, num_workers, seed, n=4):
    loader = DataLoader(
        ds,
        batch_size=2,
        sampler=UDAPairSampler(ds, seed=seed),
        num_workers=num_workers,
        collate_fn=pseudo_collate,
        worker_init_fn=_seed_worker if num_workers else None)
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            return out


def flat(batch_list):
    return [
        t for b in batch_list for dom in ('source', 'target')
        for t in b['inputs'][dom]
    ] + [
        s.gt_sem_seg.data for b in batch_list
        for s in b['data_samples']['source']
    ]


def test_same_batches_for_any_num_workers(roots):
    ds = uda(roots, source=source_cfg(roots['gta'], RANDOM_SOURCE),
             target=target_cfg(roots['cs'], RANDOM_TARGET))
    np.random.seed(123)
    serial = flat(batches(ds, 0, seed=21))
    parallel = flat(batches(ds, 2, seed=21))
    assert len(serial) == 24
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel))
    # A sample is a function of its triple alone (what resume relies on);
    # serial[1] is the source image of the second triple.
    triple = take(UDAPairSampler(ds, seed=21), 2)[1]
    assert torch.equal(ds[triple]['inputs']['source'], serial[1])
    other = flat(batches(ds, 0, seed=22))
    assert not all(torch.equal(a, b) for a, b in zip(serial, other))
    # Another sample seed draws other crops / flips / colour distortions.
    reseeded = (triple[0], triple[1], triple[2] + 1)
    assert not torch.equal(ds[reseeded]['inputs']['source'], serial[1])


# --------------------------------------------------------------------------
# Rare-class sampling
# --------------------------------------------------------------------------
def rcs_labels():
    """8 labels of 20x20 = 400 px with known class pixel counts."""
    labels = []

    def lab(**counts):
        ids = {'road': 7, 'car': 26, 'person': 24, 'sky': 23}
        flat_ids = np.concatenate(
            [np.full(n, ids[k], np.uint8) for k, n in counts.items()])
        assert flat_ids.size == 400
        return flat_ids.reshape(20, 20)

    labels += [lab(road=300, car=100) for _ in range(4)]  # images 1-4
    labels += [lab(road=200, person=200) for _ in range(2)]  # 5-6
    labels += [lab(sky=400), lab(sky=350, person=50)]  # 7, 8
    return labels


@pytest.fixture(scope='module')
def rcs_root(tmp_path_factory):
    base = tmp_path_factory.mktemp('rcs')
    make_gta(base / 'gta', rcs_labels(), seed=2)
    convert_dataset(str(base / 'gta'), 'gta', log=None, progress=False)
    make_cityscapes(base / 'cs', num_train=2, num_val=0, size=(8, 8))
    return dict(gta=str(base / 'gta'), cs=str(base / 'cs'))


def expected_rcs(temperature):
    # trainIds road 0, sky 10, person 11, car 13; totals over 3200 px.
    pixels = {0: 1600, 10: 750, 11: 450, 13: 400}
    classes = sorted(pixels)
    f = np.array([pixels[c] for c in classes]) / 3200
    p = np.exp((1 - f) / temperature)
    return classes, p / p.sum()


def test_rcs_class_probabilities(rcs_root):
    for temperature in (0.01, 0.1):
        ds = uda(rcs_root, rare_class_sampling=dict(
            class_temp=temperature, min_pixels=90))
        classes, p = expected_rcs(temperature)
        assert ds.rcs_classes == classes
        np.testing.assert_allclose(ds.rcs_class_probs, p, rtol=1e-9)
    # Eligible images: > min_pixels of the class (person: not image 8).
    assert ds.rcs_samples_with_class == {
        0: [0, 1, 2, 3, 4, 5], 10: [6, 7], 11: [4, 5], 13: [0, 1, 2, 3]
    }


def test_rcs_sampling_frequencies(rcs_root):
    ds = uda(rcs_root, rare_class_sampling=dict(class_temp=0.1,
                                                min_pixels=90))
    classes, p = expected_rcs(0.1)
    n = 6000
    np.random.seed(0)
    draws = [ds.sample_rare_class() for _ in range(n)]
    counts = np.array([sum(c == k for c, _ in draws) for k in classes])
    sigma = np.sqrt(n * p * (1 - p))
    assert np.all(np.abs(counts - n * p) < 4 * sigma), (counts, n * p)
    # Images uniform among the eligible ones of the drawn class.
    for c, eligible in ds.rcs_samples_with_class.items():
        chosen = [i for k, i in draws if k == c]
        hist = np.array([chosen.count(i) for i in eligible])
        assert set(chosen) == set(eligible)
        m, q = len(chosen), 1 / len(eligible)
        assert np.all(np.abs(hist - m * q) < 4 * np.sqrt(m * q * (1 - q)) + 1)


def test_rcs_item_uses_sample_seed(rcs_root):
    ds = uda(rcs_root, rare_class_sampling=dict(class_temp=0.1,
                                                min_pixels=90))
    a, b = ds[(0, 0, 5)], ds[(3, 0, 5)]  # source index unused under RCS
    assert a['data_samples']['source'].img_path == \
        b['data_samples']['source'].img_path
    rcs_class = a['data_samples']['source'].rcs_class
    labels = a['data_samples']['source'].gt_sem_seg.data
    assert (labels == rcs_class).sum() > 90 * 0.5


def test_rcs_recrops_until_class_is_in_crop(tmp_path):
    ids = np.full((64, 64), 7, np.uint8)
    ids[:, :16] = 26  # car: 1024 px in the left 16 columns
    make_gta(tmp_path / 'gta', [ids])
    convert_dataset(str(tmp_path / 'gta'), 'gta', log=None, progress=False)
    make_cityscapes(tmp_path / 'cs', num_train=1, num_val=0, size=(8, 8))
    crop = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='RandomCrop', crop_size=(32, 32)),
        dict(type='PackSegInputs')
    ]
    roots = dict(gta=str(tmp_path / 'gta'), cs=str(tmp_path / 'cs'))
    rates = {}
    for ratio in (0.0, 0.5):
        ds = uda(roots, source=source_cfg(roots['gta'], crop),
                 rare_class_sampling=dict(min_pixels=500,
                                          min_crop_ratio=ratio))
        hits = 0
        for seed in range(60):
            sample = ds[(0, 0, seed)]['data_samples']['source']
            assert sample.rcs_class == 13
            hits += int((sample.gt_sem_seg.data == 13).sum()) > 250
        rates[ratio] = hits / 60
    # One crop has > 250 car pixels with p = 9/33; 11 tries: 0.97.
    assert rates[0.0] < 0.5 and rates[0.5] > 0.85, rates


def test_rcs_without_statistics_names_the_converter(rcs_root, tmp_path):
    import shutil
    shutil.copytree(rcs_root['gta'], tmp_path / 'gta')
    (tmp_path / 'gta' / 'sample_class_stats.json').unlink()
    with pytest.raises(FileNotFoundError) as err:
        uda(dict(gta=str(tmp_path / 'gta'), cs=rcs_root['cs']),
            rare_class_sampling=dict())
    msg = str(err.value)
    assert str(tmp_path / 'gta' / 'sample_class_stats.json') in msg
    assert f'python tools/dataset_converters/gta.py {tmp_path / "gta"}' in msg


def test_rcs_reads_daformer_style_paths(rcs_root, tmp_path):
    import shutil
    root = tmp_path / 'gta'
    shutil.copytree(rcs_root['gta'], root)
    for name in ('sample_class_stats.json', 'samples_with_class.json'):
        text = (root / name).read_text().replace('"labels/',
                                                 '"data/gta/labels/')
        (root / name).write_text(text)
    assert 'data/gta/labels/00001' in (root /
                                       'sample_class_stats.json').read_text()
    ds = uda(dict(gta=str(root), cs=rcs_root['cs']),
             rare_class_sampling=dict(class_temp=0.1, min_pixels=90))
    np.testing.assert_allclose(ds.rcs_class_probs, expected_rcs(0.1)[1])
    assert ds.rcs_samples_with_class[11] == [4, 5]
    stats = json.loads((root / 'samples_with_class.json').read_text())
    assert stats['13'][0][0] == 'data/gta/labels/00001_labelTrainIds.png'
