"""Paired source/target dataset for UDA training, with rare-class
sampling (DAFormer RCS, Hoyer et al., CVPR 2022; lhoyer/DAFormer
``mmseg/datasets/uda_dataset.py``)."""
import copy
import functools
import json
import logging
import os
import os.path as osp
import random
import types
from contextlib import contextmanager
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from mmcv.transforms import LoadAnnotations as _MMCVLoadAnnotations
from mmengine.logging import print_log

from mmseg_uda.registry import DATASETS
from .conversion import (NUM_CLASSES, SAMPLES_WITH_CLASS_FILE, STATS_FILE,
                         CONVERTER_SCRIPTS)

RCS_DEFAULTS = dict(class_temp=0.01, min_pixels=3000, min_crop_ratio=0.5)
# DAFormer re-draws the crop of the chosen image up to 10 times.
RCS_MAX_RECROPS = 10


@contextmanager
def seeded_random_state(seed: Optional[int]):
    """Seed python's ``random``, numpy's global RNG and torch's CPU RNG
    with ``seed`` inside the block and restore their previous states after.

    mmcv/mmseg transforms draw from these global RNGs; seeding them per
    sample makes a sample independent of the worker that builds it. The
    CUDA RNGs are not touched. ``seed=None`` leaves everything as it is.
    """
    if seed is None:
        yield
        return
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)


def rcs_class_probabilities(class_pixels: Dict[int, int],
                            temperature: float) -> Tuple[List[int],
                                                         np.ndarray]:
    """DAFormer RCS class distribution, p(c) = softmax((1 - f_c) / T).

    Args:
        class_pixels: trainId -> pixel count over the source set.
        temperature: T (DAFormer: 0.01).

    Returns:
        (classes in increasing trainId order, probabilities).
    """
    classes = sorted(c for c, n in class_pixels.items() if n > 0)
    counts = np.array([class_pixels[c] for c in classes], dtype=np.float64)
    logits = (1.0 - counts / counts.sum()) / temperature
    logits -= logits.max()
    probs = np.exp(logits)
    return classes, probs / probs.sum()


def _is_label_loader(transform) -> bool:
    """``LoadAnnotations`` of mmcv/mmseg, or any class named like it."""
    return isinstance(transform, _MMCVLoadAnnotations) or \
        'LoadAnnotation' in type(transform).__name__


def _is_transform_like(value) -> bool:
    """A transform object (callable instance), not a function, method or
    class, which holds no transforms."""
    return callable(value) and not isinstance(
        value, (type, types.FunctionType, types.MethodType,
                types.BuiltinFunctionType, functools.partial, torch.nn.Module))


def find_label_loaders(transform, path: str = 'pipeline',
                       _seen: Optional[set] = None) -> List[str]:
    """Paths of every label-loading transform in ``transform``, searched
    recursively through wrappers.

    mmcv's ``Compose``/``RandomApply``/``RandomChoice``/``KeyMapper``/
    ``TransformBroadcaster``, mmseg's ``TestTimeAug`` and custom wrappers
    keep their inner transforms under some attribute (``transforms``,
    ``subroutines``, ...); every attribute that is a transform object or a
    list/tuple/dict of them is searched.

    Returns:
        e.g. ``['pipeline.transforms[1].transforms.transforms[0]
        (LoadAnnotations)']``; empty if nothing loads labels.
    """
    seen = set() if _seen is None else _seen
    if id(transform) in seen:
        return []
    seen.add(id(transform))
    if _is_label_loader(transform):
        return [f'{path} ({type(transform).__name__})']
    found = []
    for name, value in sorted(vars(transform).items()) if hasattr(
            transform, '__dict__') else ():
        if isinstance(value, (list, tuple)):
            children = [(f'{path}.{name}[{i}]', v)
                        for i, v in enumerate(value)]
        elif isinstance(value, dict):
            children = [(f'{path}.{name}[{k!r}]', v)
                        for k, v in value.items()]
        else:
            children = [(f'{path}.{name}', value)]
        for child_path, child in children:
            if _is_transform_like(child):
                found += find_label_loaders(child, child_path, seen)
    return found


def find_cfg_label_loaders(steps, path: str = 'pipeline') -> List[str]:
    """Paths of every ``LoadAnnotations``-like ``type`` in a pipeline config,
    nested dicts/lists included (wrappers' ``transforms=[...]``)."""
    found = []
    if isinstance(steps, dict):
        kind = steps.get('type')
        name = kind if isinstance(kind, str) else getattr(
            kind, '__name__', '')
        if 'LoadAnnotation' in name.split('.')[-1]:
            return [f'{path} ({name.split(".")[-1]})']
        for key, value in steps.items():
            if isinstance(value, (dict, list, tuple)):
                found += find_cfg_label_loaders(value, f'{path}.{key}')
    elif isinstance(steps, (list, tuple)):
        for i, step in enumerate(steps):
            found += find_cfg_label_loaders(step, f'{path}[{i}]')
    return found


def target_label_fields(sample) -> List[str]:
    """Label fields (``gt_*``) a target sample carries: the fields of a
    packed ``SegDataSample``, or the keys of an unpacked results dict
    (``gt_seg_map``)."""
    if sample is None:
        return []
    keys = sample.keys() if hasattr(sample, 'keys') else []
    return sorted(k for k in keys if str(k).startswith('gt_'))


def _target_labels_error(where: List[str]) -> str:
    return ('UDADataset: the target pipeline loads labels at '
            f'{", ".join(where)}. Target labels must never be used for '
            'training; remove LoadAnnotations from the target pipeline '
            '(also from inside RandomApply/RandomChoice/Compose/TestTimeAug '
            'or any other wrapper).')


def _check_cfg_folders(cfg: dict, role: str) -> None:
    """Name a missing data root / image folder before the dataset class
    fails somewhere inside its file listing."""
    data_root = cfg.get('data_root', None)
    if data_root and not osp.isdir(data_root):
        raise FileNotFoundError(
            f'UDADataset: {role} data_root "{data_root}" ({cfg.get("type")}) '
            'does not exist. Download/link the dataset there or set '
            f'{role}.data_root in the config.')
    img_path = (cfg.get('data_prefix', None) or {}).get('img_path', None)
    if data_root and img_path and not osp.isabs(img_path):
        folder = osp.join(data_root, img_path)
        if not osp.isdir(folder):
            raise FileNotFoundError(
                f'UDADataset: {role} image folder "{folder}" does not exist '
                f'({cfg.get("type")}).')
        if not _has_visible_file(folder):
            # mmengine would fail later with 'need at least one array to
            # concatenate' when serialising an empty file list.
            raise FileNotFoundError(
                f'UDADataset: the {role} dataset ({cfg.get("type")}) is '
                f'empty: no files below "{folder}".')


def _has_visible_file(folder: str) -> bool:
    """Whether any non-hidden file lies below ``folder`` (stops at the
    first one)."""
    for _, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith('.')]
        if any(not name.startswith('.') for name in filenames):
            return True
    return False


@DATASETS.register_module()
class UDADataset:
    """One labelled source sample and one unlabelled target sample per item.

    ``dataset[i]`` is::

        dict(inputs=dict(source=<CHW uint8 tensor>, target=<CHW tensor>),
             data_samples=dict(source=<SegDataSample with gt_sem_seg>,
                               target=<SegDataSample, no gt_sem_seg>))

    i.e. what each domain's pipeline (ending in ``PackSegInputs``) returns,
    nested per domain; mmengine's ``pseudo_collate`` turns a batch into
    ``dict(inputs=dict(source=[...], target=[...]), data_samples=...)``.

    Indices: :class:`UDAPairSampler` yields ``(source_index, target_index,
    sample_seed)``; every random draw of the item (RCS choices, both
    pipelines) is made under ``sample_seed`` so an item is the same for any
    ``num_workers`` and after a resume. A plain int ``i`` (other samplers)
    pairs source ``i % num_source`` with target ``i % num_target`` and uses
    the worker's global RNG. ``len()`` is the larger domain's size (DAFormer
    used |S|·|T|, which an index-enumerating sampler cannot handle).

    Rare-class sampling (DAFormer RCS, see docs/self_training.md), enabled by
    ``rare_class_sampling=dict(class_temp=0.01, min_pixels=3000,
    min_crop_ratio=0.5)``: a class c is drawn with p(c) = softmax((1 -
    f_c)/T), f_c its pixel frequency in ``DATA_ROOT/sample_class_stats.json``;
    then a source image uniformly among those with more than
    ``min_pixels`` pixels of c (``DATA_ROOT/samples_with_class.json``); the
    source pipeline is re-run up to 10 times until the crop holds more than
    ``min_pixels * min_crop_ratio`` pixels of c. The sampler's source index
    is then unused; the target index is still the sampler's (DAFormer draws
    the target uniformly at random, which the permutation stream also
    does). Deviation from DAFormer: a class with no image above
    ``min_pixels`` is dropped from the distribution with a warning instead
    of failing an assertion.

    ``target=None`` gives source-only items (``inputs``/``data_samples``
    hold only ``source``), for source-only baselines and domain
    generalisation; the sampler's target index is then None.

    Args:
        source: config or built dataset of the labelled source domain.
        target: config or built dataset of the target domain (its pipeline
            must not load labels), or None for source-only items.
        rare_class_sampling: None, or RCS settings (see above).
        lazy_init: defer :meth:`full_init` (mmengine's Runner calls it).
    """

    def __init__(self,
                 source: Union[dict, object],
                 target: Union[dict, object, None],
                 rare_class_sampling: Optional[dict] = None,
                 lazy_init: bool = False) -> None:
        if isinstance(target, dict):
            where = find_cfg_label_loaders(target.get('pipeline') or [])
            if where:
                raise ValueError(_target_labels_error(where))
        for cfg, role in ((source, 'source'), (target, 'target')):
            if isinstance(cfg, dict):
                _check_cfg_folders(cfg, role)
        self.source = DATASETS.build(source) if isinstance(source,
                                                           dict) else source
        self.target = DATASETS.build(target) if isinstance(target,
                                                           dict) else target
        if self.target is not None:
            where = find_label_loaders(
                getattr(self.target, 'pipeline', None))
            if where:
                raise ValueError(_target_labels_error(where))
        source_classes = tuple(self.source.metainfo.get('classes', ()))
        target_classes = source_classes if self.target is None else tuple(
            self.target.metainfo.get('classes', ()))
        if source_classes != target_classes:
            raise ValueError(
                'UDADataset: source and target class lists differ.\n'
                f'  source ({type(self.source).__name__}): '
                f'{list(source_classes)}\n'
                f'  target ({type(self.target).__name__}): '
                f'{list(target_classes)}\n'
                'Both domains must use the same label space (set metainfo '
                'on one of them).')
        if rare_class_sampling is not None:
            unknown = set(rare_class_sampling) - set(RCS_DEFAULTS)
            if unknown:
                raise ValueError(
                    f'UDADataset: unknown rare_class_sampling keys '
                    f'{sorted(unknown)}; known: {sorted(RCS_DEFAULTS)}')
            self.rcs_cfg = {**RCS_DEFAULTS, **rare_class_sampling}
        else:
            self.rcs_cfg = None
        self.rcs_classes: List[int] = []
        self.rcs_class_probs = np.zeros(0)
        self.rcs_samples_with_class: Dict[int, List[int]] = {}
        self._fully_initialized = False
        if not lazy_init:
            self.full_init()

    # ------------------------------------------------------------------
    @property
    def metainfo(self) -> dict:
        """The source dataset's meta information (classes, palette)."""
        return copy.deepcopy(self.source.metainfo)

    @property
    def num_source(self) -> int:
        return len(self.source)

    @property
    def num_target(self) -> int:
        """Target size; 0 for source-only items (``target=None``)."""
        return 0 if self.target is None else len(self.target)

    def __len__(self) -> int:
        return max(self.num_source, self.num_target)

    def full_init(self) -> None:
        """Load both file lists, check they are not empty, and read the RCS
        statistics (once)."""
        if self._fully_initialized:
            return
        for dataset, role in ((self.source, 'source'),
                              (self.target, 'target')):
            if dataset is None:
                continue
            if hasattr(dataset, 'full_init'):
                dataset.full_init()
            if len(dataset) == 0:
                prefix = getattr(dataset, 'data_prefix', {})
                raise FileNotFoundError(
                    f'UDADataset: the {role} dataset '
                    f'({type(dataset).__name__}) is empty; data_root '
                    f'"{getattr(dataset, "data_root", "")}", data_prefix '
                    f'{prefix}.')
        if self.rcs_cfg is not None:
            self._init_rare_class_sampling()
        self._fully_initialized = True

    # ------------------------------------------------------------------
    def __getitem__(self, index) -> dict:
        if not self._fully_initialized:
            self.full_init()
        source_index, target_index, seed = self._parse_index(index)
        with seeded_random_state(seed):
            if self.rcs_cfg is not None:
                source = self.rare_class_source_sample()
            else:
                source = self.source[source_index]
            target = None if self.target is None else \
                self.target[target_index]
        if target is not None:
            self._check_target_unlabelled(target, index, target_index)
        item = dict(
            inputs=dict(source=source['inputs']),
            data_samples=dict(source=source['data_samples']))
        if target is not None:
            item['inputs']['target'] = target['inputs']
            item['data_samples']['target'] = target['data_samples']
        return item

    def _check_target_unlabelled(self, target: dict, index,
                                 target_index: int) -> None:
        """Run-time half of the target-label guard: whatever the pipeline
        is made of, the sample it produced must carry no ``gt_*`` field."""
        samples = target.get('data_samples')
        samples = samples if isinstance(samples, (list, tuple)) else [samples]
        fields = sorted(
            set(target_label_fields(target)).union(
                *(target_label_fields(s) for s in samples)))
        if fields:
            raise ValueError(
                f'UDADataset[{index!r}]: target sample {target_index} '
                f'({type(self.target).__name__}) carries {fields}: its '
                'pipeline loaded the label. Target labels must never be used '
                'for training; remove LoadAnnotations (or the custom '
                'transform that adds the label) from the target pipeline.')

    def _parse_index(self, index) -> Tuple[int, Optional[int], Optional[int]]:
        if isinstance(index, (tuple, list)):
            if len(index) != 3:
                raise ValueError(
                    'UDADataset index must be (source_index, target_index, '
                    f'sample_seed) or an int, got {index!r}')
            source_index, target_index, seed = index
            return (int(source_index),
                    None if target_index is None else int(target_index),
                    int(seed))
        index = int(index)
        target_index = None if self.target is None else \
            index % self.num_target
        return index % self.num_source, target_index, None

    # ------------------------------------------------------------------
    # Rare-class sampling
    # ------------------------------------------------------------------
    def _stats_paths(self) -> Tuple[str, str]:
        data_root = getattr(self.source, 'data_root', '') or ''
        if not data_root:
            raise ValueError(
                'UDADataset: rare_class_sampling needs the source dataset\'s '
                'data_root (the statistics files live there).')
        return (osp.join(data_root, STATS_FILE),
                osp.join(data_root, SAMPLES_WITH_CLASS_FILE))

    def _converter_hint(self) -> str:
        command = getattr(self.source, 'converter_command', None)
        if isinstance(command, str):
            return command
        data_root = getattr(self.source, 'data_root', 'DATA_ROOT')
        return f'python {CONVERTER_SCRIPTS["gta"]} {data_root}'

    def _label_index(self):
        """Map the source's label paths (relative to its data_root, and
        basenames as a fallback) to dataset indices."""
        root = osp.abspath(self.source.data_root)
        by_rel, by_name = {}, {}
        for i in range(len(self.source)):
            seg = self.source.get_data_info(i).get('seg_map_path')
            if seg is None:
                raise ValueError(
                    'UDADataset: rare_class_sampling needs source labels '
                    '(data_prefix.seg_map_path).')
            rel = osp.relpath(osp.abspath(seg), root).replace(os.sep, '/')
            by_rel[rel] = i
            by_name.setdefault(osp.basename(seg), []).append(i)
        return root, by_rel, by_name

    def _init_rare_class_sampling(self) -> None:
        stats_path, swc_path = self._stats_paths()
        for path in (stats_path, swc_path):
            if not osp.isfile(path):
                raise FileNotFoundError(
                    f'UDADataset: rare-class sampling needs "{path}", which '
                    'the dataset converter writes. Run '
                    f'`{self._converter_hint()}` (or disable '
                    'rare_class_sampling).')
        with open(stats_path) as f:
            sample_class_stats = json.load(f)
        with open(swc_path) as f:
            samples_with_class = json.load(f)
        root, by_rel, by_name = self._label_index()

        def match(file: str) -> Optional[int]:
            file = file.replace('\\', '/')
            if osp.isabs(file):
                rel = osp.relpath(file, root).replace(os.sep, '/')
            else:
                rel = file
            if rel in by_rel:
                return by_rel[rel]
            # DAFormer writes paths like 'data/gta/labels/x.png'.
            candidates = by_name.get(osp.basename(file), [])
            return candidates[0] if len(candidates) == 1 else None

        class_pixels: Dict[int, int] = {}
        matched = 0
        for entry in sample_class_stats:
            if match(entry['file']) is None:
                continue
            matched += 1
            for key, n in entry.items():
                if key != 'file' and int(key) < NUM_CLASSES:
                    class_pixels[int(key)] = class_pixels.get(int(key), 0) + n
        if matched == 0:
            example = (f' (first entry: "{sample_class_stats[0]["file"]}")'
                       if sample_class_stats else ' (the file is empty)')
            raise ValueError(
                f'UDADataset: no entry of "{stats_path}" matches a label of '
                f'the source dataset{example}. Re-run '
                f'`{self._converter_hint()}`.')
        classes, probs = rcs_class_probabilities(class_pixels,
                                                 self.rcs_cfg['class_temp'])
        min_pixels = self.rcs_cfg['min_pixels']
        eligible: Dict[int, List[int]] = {}
        for c in classes:
            indices = []
            for file, n in samples_with_class.get(str(c), []):
                idx = match(file)
                if n > min_pixels and idx is not None:
                    indices.append(idx)
            eligible[c] = sorted(set(indices))
        dropped = [c for c in classes if not eligible[c]]
        if dropped:
            print_log(
                f'UDADataset: rare-class sampling drops class(es) {dropped}: '
                f'no source image has more than {min_pixels} pixels of them.',
                logger='current',
                level=logging.WARNING)
        keep = [i for i, c in enumerate(classes) if eligible[c]]
        if not keep:
            raise ValueError(
                f'UDADataset: rare-class sampling found no source image with '
                f'more than min_pixels={min_pixels} pixels of any class; '
                'lower min_pixels.')
        self.rcs_classes = [classes[i] for i in keep]
        self.rcs_class_probs = probs[keep] / probs[keep].sum()
        self.rcs_samples_with_class = {
            c: eligible[c]
            for c in self.rcs_classes
        }
        print_log(
            'UDADataset: rare-class sampling p(c) = ' + ', '.join(
                f'{c}: {p:.4f}'
                for c, p in zip(self.rcs_classes, self.rcs_class_probs)),
            logger='current')

    def sample_rare_class(self) -> Tuple[int, int]:
        """Draw (class, source index) with numpy's global RNG."""
        c = self.rcs_classes[np.random.choice(
            len(self.rcs_classes), p=self.rcs_class_probs)]
        candidates = self.rcs_samples_with_class[c]
        return c, candidates[np.random.randint(len(candidates))]

    def rare_class_source_sample(self) -> dict:
        """A source sample of a rare class; its data sample's metainfo
        records the class as ``rcs_class``."""
        c, index = self.sample_rare_class()
        min_crop_pixels = self.rcs_cfg['min_pixels'] * \
            self.rcs_cfg['min_crop_ratio']
        sample = self.source[index]
        if self.rcs_cfg['min_crop_ratio'] > 0:
            for _ in range(RCS_MAX_RECROPS):
                label = sample['data_samples'].gt_sem_seg.data
                if int((label == c).sum()) > min_crop_pixels:
                    break
                sample = self.source[index]
        sample['data_samples'].set_metainfo(dict(rcs_class=int(c)))
        return sample

    def __repr__(self) -> str:
        target = 'None' if self.target is None else \
            f'{type(self.target).__name__}[{len(self.target)}]'
        return (f'UDADataset(source={type(self.source).__name__}'
                f'[{len(self.source)}], target={target}, '
                f'rare_class_sampling={self.rcs_cfg})')


__all__ = [
    'UDADataset', 'seeded_random_state', 'rcs_class_probabilities',
    'find_label_loaders', 'find_cfg_label_loaders', 'target_label_fields'
]
