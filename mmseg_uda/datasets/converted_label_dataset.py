"""Base class for datasets whose trainId labels our converters write."""
import json
import os.path as osp
from typing import List, Optional

import numpy as np
from mmengine.logging import print_log
from mmseg.datasets import BaseSegDataset, CityscapesDataset

from .conversion import (IGNORE_INDEX, NUM_CLASSES, SIZE_MISMATCH_FILE,
                         LabelEncodingError, list_files, converter_command,
                         read_train_id_png)

CITYSCAPES_METAINFO = dict(
    classes=tuple(CityscapesDataset.METAINFO['classes']),
    palette=[list(c) for c in CityscapesDataset.METAINFO['palette']])

_MAX_NAMED = 5


def _first(names: List[str]) -> str:
    shown = ', '.join(names[:_MAX_NAMED])
    return shown + (f' (and {len(names) - _MAX_NAMED} more)'
                    if len(names) > _MAX_NAMED else '')


class ConvertedLabelDataset(BaseSegDataset):
    """A :class:`mmseg.datasets.BaseSegDataset` that checks its files when
    it is built, so that a wrong setup fails before training starts with a
    message naming the file and the fix (never a traceback from a
    dataloader worker hours later).

    ``load_data_list`` checks, without decoding any image except one label:
    the data root and image folder exist and hold images; every image has
    its converted trainId label (otherwise the message names the converter
    command, or says the original label is missing too); the first label is
    an 8-bit trainId image (values 0..18 and 255). Pairs that the converter
    listed as size-mismatched and skipped (``DATA_ROOT/size_mismatch.json``)
    are left out with one log line.

    Subclasses set ``CONVERTER`` (key of
    :data:`mmseg_uda.datasets.conversion.CONVERTER_SCRIPTS`) and
    ``ORIGINAL_LABEL_SUFFIX``.
    """
    METAINFO = CITYSCAPES_METAINFO
    CONVERTER: str = ''
    ORIGINAL_LABEL_SUFFIX: str = '.png'

    @property
    def converter_command(self) -> str:
        return converter_command(self.CONVERTER, self.data_root or 'DATA_ROOT')

    def load_data_list(self) -> List[dict]:
        img_dir = self.data_prefix.get('img_path', None)
        ann_dir = self.data_prefix.get('seg_map_path', None)
        name = type(self).__name__
        if self.data_root and not osp.isdir(self.data_root):
            raise FileNotFoundError(
                f'{name}: data_root "{self.data_root}" does not exist. '
                'Download the dataset and extract it there, link it there, '
                'or set data_root in the config.')
        if not img_dir or not osp.isdir(img_dir):
            raise FileNotFoundError(
                f'{name}: image folder "{img_dir}" does not exist (data_root '
                f'"{self.data_root}", data_prefix {self.data_prefix}).')
        if ann_dir and not osp.isdir(ann_dir):
            raise FileNotFoundError(
                f'{name}: label folder "{ann_dir}" does not exist (data_root '
                f'"{self.data_root}").')
        if self.ann_file:
            data_list = super().load_data_list()
        else:
            data_list = self._list_images(img_dir, ann_dir)
        if not data_list:
            raise FileNotFoundError(
                f'{name}: no "*{self.img_suffix}" images found in "{img_dir}"'
                + (f' listed by "{self.ann_file}"' if self.ann_file else '')
                + '.')
        data_list = self._drop_size_mismatched(data_list)
        if ann_dir:
            self._check_labels(data_list, ann_dir)
        return data_list

    def _list_images(self, img_dir: str, ann_dir: Optional[str]) -> List[dict]:
        """Images below ``img_dir``: visible files ending in ``img_suffix``
        that are not labels (GTA5 images and labels share '.png')."""
        data_list = []
        labels_look_like_images = self.seg_map_suffix != self.img_suffix
        for rel in list_files(img_dir):
            if osp.basename(rel).startswith('.') or \
                    not rel.endswith(self.img_suffix) or \
                    (labels_look_like_images and
                     rel.endswith(self.seg_map_suffix)):
                continue
            data_info = dict(img_path=osp.join(img_dir, rel))
            if ann_dir:
                data_info['seg_map_path'] = osp.join(
                    ann_dir, rel[:-len(self.img_suffix)] + self.seg_map_suffix)
            data_info['label_map'] = self.label_map
            data_info['reduce_zero_label'] = self.reduce_zero_label
            data_info['seg_fields'] = []
            data_list.append(data_info)
        return data_list

    def _drop_size_mismatched(self, data_list: List[dict]) -> List[dict]:
        if not self.data_root:
            return data_list
        path = osp.join(self.data_root, SIZE_MISMATCH_FILE)
        if not osp.isfile(path):
            return data_list
        with open(path) as f:
            record = json.load(f)
        skipped = {
            osp.normpath(osp.join(self.data_root, p['image']))
            for p in record.get('pairs', []) if p.get('action') == 'skipped'
        }
        if not skipped:
            return data_list
        kept = [
            d for d in data_list if osp.normpath(d['img_path']) not in skipped
        ]
        print_log(
            f'{type(self).__name__}: skipping {len(data_list) - len(kept)} '
            f'image/label pair(s) whose sizes differ, listed in {path}',
            logger='current')
        return kept

    def _check_labels(self, data_list: List[dict], ann_dir: str) -> None:
        name = type(self).__name__
        existing = set(list_files(ann_dir))
        prefix = ann_dir.rstrip('/') + '/'
        not_converted, no_label = [], []
        for info in data_list:
            seg = info['seg_map_path']
            rel = seg[len(prefix):] if seg.startswith(prefix) else \
                osp.relpath(seg, ann_dir).replace(osp.sep, '/')
            if rel in existing:
                continue
            original = rel[:-len(self.seg_map_suffix)] + \
                self.ORIGINAL_LABEL_SUFFIX
            (not_converted if original in existing else no_label).append(rel)
        if no_label:
            raise FileNotFoundError(
                f'{name}: {len(no_label)} image(s) in '
                f'"{self.data_prefix["img_path"]}" have no label at all in '
                f'"{ann_dir}" (missing: {_first(no_label)}). Remove those '
                'images or restore their labels, then run '
                f'`{self.converter_command}`.')
        if not_converted:
            raise FileNotFoundError(
                f'{name}: {len(not_converted)} of {len(data_list)} label(s) '
                f'have not been converted to trainIds in "{ann_dir}" '
                f'(missing: {_first(not_converted)}). Run '
                f'`{self.converter_command}` first.')
        self._check_label_encoding(data_list[0]['seg_map_path'])

    def _check_label_encoding(self, path: str) -> None:
        """Decode one label: the cheap guard against pointing the dataset
        at original (labelIds / SYNTHIA 16-bit) labels."""
        try:
            label = read_train_id_png(path)
        except (LabelEncodingError, OSError) as e:
            raise LabelEncodingError(
                f'{type(self).__name__}: {path} is not an 8-bit trainId '
                f'label ({e}). Check seg_map_suffix, or re-run '
                f'`{self.converter_command}`.') from None
        values = np.unique(label)
        bad = values[(values >= NUM_CLASSES) & (values != IGNORE_INDEX)]
        if bad.size:
            raise LabelEncodingError(
                f'{type(self).__name__}: {path} holds values '
                f'{bad.tolist()} outside the trainIds 0..{NUM_CLASSES - 1} '
                f'and {IGNORE_INDEX}: it looks like an unconverted label '
                '(labelIds or SYNTHIA ids). Check seg_map_suffix, or re-run '
                f'`{self.converter_command}`.')
