"""Segmentation IoU from one global confusion matrix, with class-subset means.

Implements the UDA benchmark evaluation used by AdaptSegNet, ADVENT, PLCA
and DAFormer (Cityscapes val, full-resolution labels): per-class IoU
accumulated over the whole validation set (one confusion matrix, not
per-image averages), ``mIoU`` over all classes, and means over class subsets
computed directly from the per-class IoUs (SYNTHIA→Cityscapes ``mIoU16`` and
``mIoU13``), instead of rescaling the 19-class mean by 19/16.
"""
import logging
import os.path as osp
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger, print_log
from mmengine.utils import mkdir_or_exist
from PIL import Image
from prettytable import PrettyTable

from mmseg_uda.registry import METRICS

# Cityscapes trainId order (mcordts/cityscapesScripts helpers/labels.py).
CITYSCAPES_CLASSES = ('road', 'sidewalk', 'building', 'wall', 'fence', 'pole',
                      'traffic light', 'traffic sign', 'vegetation',
                      'terrain', 'sky', 'person', 'rider', 'car', 'truck',
                      'bus', 'train', 'motorcycle', 'bicycle')
# SYNTHIA has no terrain, truck or train labels, so mIoU16 leaves them out.
SYNTHIA_16_CLASSES = tuple(
    c for c in CITYSCAPES_CLASSES if c not in ('terrain', 'truck', 'train'))
# mIoU13 (often "mIoU*") additionally drops wall, fence and pole.
SYNTHIA_13_CLASSES = tuple(
    c for c in SYNTHIA_16_CLASSES if c not in ('wall', 'fence', 'pole'))
DEFAULT_CLASS_SUBSETS = {
    'mIoU16': SYNTHIA_16_CLASSES,
    'mIoU13': SYNTHIA_13_CLASSES
}


def compute_confusion_matrix(pred_label: torch.Tensor, gt_label: torch.Tensor,
                             num_classes: int,
                             ignore_index: int = 255) -> torch.Tensor:
    """Confusion matrix of one label map.

    Args:
        pred_label (Tensor): Predicted class ids, any shape.
        gt_label (Tensor): Ground-truth class ids, same number of pixels.
        num_classes (int): K.
        ignore_index (int): Ground-truth value whose pixels are skipped.

    Returns:
        Tensor: int64 (K, K) on the CPU; entry [g, p] counts pixels with
        ground truth g predicted as p.

    Raises:
        ValueError: on a shape mismatch, or a class id outside [0, K) in the
            prediction or in the non-ignored ground truth (silently dropping
            such pixels, as histogram-based counting does, would hide label
            mapping bugs).
    """
    if pred_label.shape != gt_label.shape:
        raise ValueError(f'prediction shape {tuple(pred_label.shape)} != '
                         f'ground-truth shape {tuple(gt_label.shape)}')
    pred = pred_label.reshape(-1).long()
    gt = gt_label.reshape(-1).long()
    valid = gt != ignore_index
    pred, gt = pred[valid], gt[valid]
    for name, labels in (('ground truth', gt), ('prediction', pred)):
        if labels.numel() and (labels.min() < 0
                               or labels.max() >= num_classes):
            bad = labels[(labels < 0) | (labels >= num_classes)].unique()
            raise ValueError(
                f'{name} contains class ids {bad.tolist()} outside '
                f'[0, {num_classes}) that are not ignore_index '
                f'({ignore_index})')
    counts = torch.bincount(
        gt * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu()


def confusion_matrix_to_scores(confusion: np.ndarray) -> Dict[str, object]:
    """Per-class IoU / accuracy and overall accuracy as fractions.

    IoU_c = TP_c / (TP_c + FP_c + FN_c) and Acc_c = TP_c / (TP_c + FN_c)
    (mmseg's IoUMetric definitions). A class with an empty union (absent
    from ground truth and prediction) has IoU NaN; a class absent from the
    ground truth has Acc NaN.

    Returns:
        dict: ``IoU`` and ``Acc`` float64 arrays of shape (K,), ``aAcc``
        float (NaN when no pixel was counted).
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    true_pos = np.diag(confusion)
    gt_area = confusion.sum(axis=1)
    pred_area = confusion.sum(axis=0)
    union = gt_area + pred_area - true_pos
    with np.errstate(divide='ignore', invalid='ignore'):
        iou = true_pos / union
        acc = true_pos / gt_area
        all_acc = true_pos.sum() / confusion.sum()
    return dict(IoU=iou, Acc=acc, aAcc=float(all_acc))


def _nanmean(values: np.ndarray) -> float:
    """Mean over non-NaN entries; NaN (without a warning) if there are
    none."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float('nan')


@METRICS.register_module()
class UDAIoUMetric(BaseMetric):
    """mIoU over one global confusion matrix plus class-subset means.

    ``process`` stores one (K, K) int64 confusion matrix per image
    (``pred_sem_seg`` vs ``gt_sem_seg``, ``ignore_index`` pixels excluded);
    mmengine's ``BaseMetric.evaluate`` gathers them from all ranks before
    ``compute_metrics`` sums them, so the result is the confusion matrix of
    the whole validation set and is identical under DDP and on one process
    (the benchmark protocol: one global confusion matrix, not per-image
    averaging).

    Reported metrics, in percent rounded to two decimals like mmseg's
    ``IoUMetric``:

    - ``aAcc``: pixel accuracy; ``mIoU`` and ``mAcc``: means over all K
      classes;
    - one key per entry of ``class_subsets`` (default ``mIoU16`` and
      ``mIoU13``, the two SYNTHIA→Cityscapes protocols: 16 classes without
      terrain/truck/train, 13 also without wall/fence/pole): the
      mean of the per-class IoUs of the named classes, computed directly
      from those IoUs (never ``mIoU * 19 / 16``).
    - with ``per_class_results=True`` also ``IoU.<class>`` and
      ``Acc.<class>`` for every class.

    NaN convention (mmseg's): a class with an empty union (neither in the
    ground truth nor predicted anywhere) has IoU NaN and is left out of
    every mean that would include it; a class absent from the ground truth
    has Acc NaN and is left out of ``mAcc``. A mean over only-NaN classes is
    NaN.

    A per-class table (IoU, Acc, and which subsets each class belongs to) is
    printed with mmengine's current logger, as ``IoUMetric`` does.

    Args:
        ignore_index (int): Ground-truth value excluded from the counts.
            Defaults to 255.
        class_subsets (Mapping[str, Sequence[str]] | None): Metric name →
            class names, resolved against ``dataset_meta['classes']``. A
            name the dataset does not have raises ``ValueError`` naming it.
            ``None`` or ``{}`` reports no subset means (use this for
            datasets whose classes are not the Cityscapes 19). Defaults to
            :data:`DEFAULT_CLASS_SUBSETS`.
        per_class_results (bool): Also return per-class IoU/Acc keys.
            Defaults to False.
        output_dir (str, optional): Write each prediction as
            ``<output_dir>/<image basename>.png`` (uint8 class ids, +1 when
            the sample has ``reduce_zero_label``), like ``IoUMetric``.
        format_only (bool): Only write predictions (test sets without
            labels); ``compute_metrics`` then returns ``{}``.
        collect_device (str): ``'cpu'`` or ``'gpu'``, see ``BaseMetric``.
        prefix (str, optional): Metric-name prefix, see ``BaseMetric``.
    """

    def __init__(self,
                 ignore_index: int = 255,
                 class_subsets: Optional[Mapping[str, Sequence[str]]] = (
                     DEFAULT_CLASS_SUBSETS),
                 per_class_results: bool = False,
                 output_dir: Optional[str] = None,
                 format_only: bool = False,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.ignore_index = ignore_index
        self.class_subsets = OrderedDict(
            (str(name), tuple(classes))
            for name, classes in (class_subsets or {}).items())
        for name, classes in self.class_subsets.items():
            if name in ('aAcc', 'mIoU', 'mAcc'):
                raise ValueError(
                    f'class subset name "{name}" clashes with a built-in '
                    'metric key')
            if not classes:
                raise ValueError(f'class subset "{name}" is empty')
        self.per_class_results = per_class_results
        self.output_dir = output_dir
        if format_only and output_dir is None:
            raise ValueError('format_only=True needs an output_dir')
        if self.output_dir and is_main_process():
            mkdir_or_exist(self.output_dir)
        self.format_only = format_only

    @BaseMetric.dataset_meta.setter
    def dataset_meta(self, dataset_meta: Optional[dict]) -> None:
        """Set the dataset meta and check the class subsets against it, so
        a wrong subset fails when the evaluator is built, not after a full
        validation pass."""
        self._dataset_meta = dataset_meta
        if dataset_meta is not None and 'classes' in dataset_meta:
            self.subset_indices(dataset_meta['classes'])

    def subset_indices(self,
                       class_names: Sequence[str]) -> Dict[str, np.ndarray]:
        """Resolve ``class_subsets`` to class indices.

        Raises:
            ValueError: naming every subset class missing from
                ``class_names``.
        """
        index_of = {name: i for i, name in enumerate(class_names)}
        resolved = OrderedDict()
        for subset, classes in self.class_subsets.items():
            missing = [c for c in classes if c not in index_of]
            if missing:
                raise ValueError(
                    f'UDAIoUMetric: class subset "{subset}" names '
                    f'{missing}, which dataset_meta["classes"] does not '
                    f'contain ({list(class_names)}). Pass class_subsets '
                    'matching the dataset, or class_subsets={} to report '
                    'no subset means.')
            resolved[subset] = np.array([index_of[c] for c in classes])
        return resolved

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Append one confusion matrix per sample (and write predictions
        when ``output_dir`` is set)."""
        num_classes = len(self.dataset_meta['classes'])
        for data_sample in data_samples:
            pred_label = data_sample['pred_sem_seg']['data']
            if not self.format_only:
                gt_label = data_sample['gt_sem_seg']['data'].to(pred_label)
                self.results.append(
                    compute_confusion_matrix(pred_label, gt_label,
                                             num_classes,
                                             self.ignore_index).numpy())
            if self.output_dir is not None:
                self._write_prediction(data_sample, pred_label)

    def _write_prediction(self, data_sample: dict,
                          pred_label: torch.Tensor) -> None:
        basename = osp.splitext(osp.basename(data_sample['img_path']))[0]
        mask = pred_label.reshape(pred_label.shape[-2:]).cpu().numpy()
        if data_sample.get('reduce_zero_label', False):
            # Undo the label shift so ids match the dataset's original ones.
            mask = mask + 1
        Image.fromarray(mask.astype(np.uint8)).save(
            osp.join(self.output_dir, f'{basename}.png'))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Sum the gathered per-image confusion matrices and derive the
        metrics (see the class docstring)."""
        logger: MMLogger = MMLogger.get_current_instance()
        if self.format_only:
            print_log(f'predictions are saved to {self.output_dir}', logger)
            return OrderedDict()
        class_names = list(self.dataset_meta['classes'])
        subsets = self.subset_indices(class_names)
        num_classes = len(class_names)
        confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        for image_confusion in results:
            confusion += np.asarray(image_confusion, dtype=np.int64)
        self.confusion_matrix = confusion  # kept for inspection/tests
        scores = confusion_matrix_to_scores(confusion)
        iou, acc = scores['IoU'], scores['Acc']

        def percent(value: float) -> float:
            return float(np.round(value * 100, 2))

        metrics = OrderedDict(
            aAcc=percent(scores['aAcc']),
            mIoU=percent(_nanmean(iou)),
            mAcc=percent(_nanmean(acc)))
        for subset, indices in subsets.items():
            metrics[subset] = percent(_nanmean(iou[indices]))
        if self.per_class_results:
            for i, name in enumerate(class_names):
                metrics[f'IoU.{name}'] = percent(iou[i])
                metrics[f'Acc.{name}'] = percent(acc[i])

        table = PrettyTable()
        table.add_column('Class', class_names)
        table.add_column('IoU', [percent(v) for v in iou])
        table.add_column('Acc', [percent(v) for v in acc])
        for subset, indices in subsets.items():
            members = set(indices.tolist())
            table.add_column(
                subset, ['x' if i in members else ''
                         for i in range(num_classes)])
        print_log('per class results:', logger)
        print_log('\n' + table.get_string(), logger=logger)
        empty = [class_names[i] for i in np.flatnonzero(np.isnan(iou))]
        if empty:
            print_log(
                f'classes with empty union (IoU NaN, left out of the means): '
                f'{empty}',
                logger,
                level=logging.WARNING)
        return metrics
