"""UDAIoUMetric: hand-computed confusion matrices and IoUs, brute-force subset
means, the NaN convention, prediction writing, and 2-process gloo
evaluation equal to one process on all samples."""
import datetime
import json
import logging
import math
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmengine.evaluator import Evaluator
from mmengine.logging import MMLogger
from mmengine.structures import PixelData
from mmseg.registry import METRICS
from mmseg.structures import SegDataSample
from PIL import Image

import mmseg_uda  # noqa: F401  registers UDAIoUMetric
from dist_utils import file_init_method
from mmseg_uda.evaluation.metrics import (UDAIoUMetric,
                                          compute_confusion_matrix)

CITYSCAPES = ('road', 'sidewalk', 'building', 'wall', 'fence', 'pole',
              'traffic light', 'traffic sign', 'vegetation', 'terrain', 'sky',
              'person', 'rider', 'car', 'truck', 'bus', 'train', 'motorcycle',
              'bicycle')
# The 19 classes minus terrain, truck and train, typed out independently of
# the module's constants.
SYNTHIA16 = ('road', 'sidewalk', 'building', 'wall', 'fence', 'pole',
             'traffic light', 'traffic sign', 'vegetation', 'sky', 'person',
             'rider', 'car', 'bus', 'motorcycle', 'bicycle')
SYNTHIA13 = ('road', 'sidewalk', 'building', 'traffic light', 'traffic sign',
             'vegetation', 'sky', 'person', 'rider', 'car', 'bus',
             'motorcycle', 'bicycle')

# Hand example, K = 3: (gt, pred) pairs (0,0) (0,1) (1,1) (1,2) (2,2), plus
# one ignored pixel (255, 0).
HAND_GT = torch.tensor([[0, 0, 1], [1, 2, 255]])
HAND_PRED = torch.tensor([[0, 1, 1], [2, 2, 0]])
HAND_CONFUSION = np.array([[1, 1, 0], [0, 1, 1], [0, 0, 1]])
# IoU: c0 1/(2+1-1)=1/2, c1 1/(2+2-1)=1/3, c2 1/(1+2-1)=1/2
# Acc: c0 1/2, c1 1/2, c2 1/1; aAcc 3/5


def make_sample(pred, gt, img_path='img.png'):
    sample = SegDataSample(metainfo=dict(img_path=img_path))
    sample.pred_sem_seg = PixelData(data=torch.as_tensor(pred)[None])
    sample.gt_sem_seg = PixelData(data=torch.as_tensor(gt)[None])
    return sample


def run_metric(metric, classes, samples):
    evaluator = Evaluator(metric)
    evaluator.dataset_meta = dict(classes=classes)
    evaluator.process(samples)
    return evaluator.evaluate(len(samples))


def brute_force_iou(preds, gts, num_classes, ignore_index=255):
    """Per-class IoU over all images by explicit set counting."""
    ious = []
    for c in range(num_classes):
        inter = union = 0
        for pred, gt in zip(preds, gts):
            valid = gt != ignore_index
            inter += int(((gt == c) & (pred == c) & valid).sum())
            union += int((((gt == c) | (pred == c)) & valid).sum())
        ious.append(inter / union if union else float('nan'))
    return ious


def mean_without_nan(values):
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values)


def test_confusion_matrix_hand_example_excludes_ignore():
    confusion = compute_confusion_matrix(HAND_PRED, HAND_GT, 3, 255)
    assert confusion.dtype == torch.int64
    np.testing.assert_array_equal(confusion.numpy(), HAND_CONFUSION)


def test_confusion_matrix_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match=r'ground truth .*\[7\]'):
        compute_confusion_matrix(
            torch.tensor([0, 1]), torch.tensor([7, 1]), 3, 255)
    with pytest.raises(ValueError, match=r'prediction .*\[3\]'):
        compute_confusion_matrix(
            torch.tensor([3, 1]), torch.tensor([0, 1]), 3, 255)
    with pytest.raises(ValueError, match='shape'):
        compute_confusion_matrix(
            torch.zeros(2, 3), torch.zeros(3, 2), 3, 255)


def test_hand_example_metrics_and_subset():
    metric = UDAIoUMetric(class_subsets={'mIoU_ab': ['a', 'b']})
    result = run_metric(metric, ('a', 'b', 'c'),
                        [make_sample(HAND_PRED, HAND_GT)])
    assert result['aAcc'] == 60.0
    assert result['mIoU'] == round((1 / 2 + 1 / 3 + 1 / 2) / 3 * 100, 2)
    assert result['mAcc'] == round((1 / 2 + 1 / 2 + 1) / 3 * 100, 2)
    assert result['mIoU_ab'] == round((1 / 2 + 1 / 3) / 2 * 100, 2)
    assert set(result) == {'aAcc', 'mIoU', 'mAcc', 'mIoU_ab'}
    np.testing.assert_array_equal(metric.confusion_matrix, HAND_CONFUSION)


def test_global_confusion_matrix_not_per_image_mean():
    # Image 1 is the hand example; image 2 is 100 correctly predicted road
    # pixels. Global class-0 IoU = 101/102; the per-image mean would differ.
    road = torch.zeros(10, 10, dtype=torch.long)
    metric = UDAIoUMetric(class_subsets=None)
    result = run_metric(metric, ('a', 'b', 'c'), [
        make_sample(HAND_PRED, HAND_GT),
        make_sample(road, road)
    ])
    expected = (101 / 102 + 1 / 3 + 1 / 2) / 3
    assert result['mIoU'] == round(expected * 100, 2)
    assert result['aAcc'] == round(103 / 105 * 100, 2)


def test_empty_union_is_nan_and_excluded(tmp_path):
    records = []

    class Collect(logging.Handler):

        def emit(self, record):
            records.append(record.getMessage())

    logger = MMLogger.get_current_instance()
    handler = Collect()
    logger.addHandler(handler)
    try:
        metric = UDAIoUMetric(
            class_subsets={'mIoU_cd': ['c', 'd']}, per_class_results=True)
        result = run_metric(metric, ('a', 'b', 'c', 'd'),
                            [make_sample(HAND_PRED, HAND_GT)])
    finally:
        logger.removeHandler(handler)
    # class d never occurs: NaN, left out of mIoU, mAcc and the subset mean
    assert math.isnan(result['IoU.d']) and math.isnan(result['Acc.d'])
    assert result['IoU.b'] == round(100 / 3, 2)
    assert result['mIoU'] == round((1 / 2 + 1 / 3 + 1 / 2) / 3 * 100, 2)
    assert result['mIoU_cd'] == 50.0
    table = '\n'.join(records)
    assert 'per class results' in table
    for column in ('Class', 'IoU', 'Acc', 'mIoU_cd'):
        assert column in table
    assert "empty union" in table and "['d']" in table


def test_default_synthia_subsets_match_brute_force():
    gen = torch.Generator().manual_seed(0)
    preds, gts, samples = [], [], []
    for _ in range(3):
        gt = torch.randint(0, 19, (16, 16), generator=gen)
        gt[torch.rand(16, 16, generator=gen) < 0.1] = 255
        pred = torch.where(
            torch.rand(16, 16, generator=gen) < 0.6, gt.clamp(max=18),
            torch.randint(0, 19, (16, 16), generator=gen))
        preds.append(pred)
        gts.append(gt)
        samples.append(make_sample(pred, gt))
    result = run_metric(
        METRICS.build(dict(type='UDAIoUMetric')), CITYSCAPES, samples)
    ious = brute_force_iou(preds, gts, 19)
    by_name = dict(zip(CITYSCAPES, ious))
    assert result['mIoU'] == round(mean_without_nan(ious) * 100, 2)
    assert result['mIoU16'] == round(
        mean_without_nan([by_name[c] for c in SYNTHIA16]) * 100, 2)
    assert result['mIoU13'] == round(
        mean_without_nan([by_name[c] for c in SYNTHIA13]) * 100, 2)
    # The 16-class mean is not the 19-class mean rescaled when the three
    # missing classes have non-zero IoU.
    assert abs(result['mIoU16'] - result['mIoU'] * 19 / 16) > 1


def test_subset_naming_unknown_class_fails_clearly():
    metric = UDAIoUMetric(class_subsets={'mIoUx': ['a', 'zebra']})
    with pytest.raises(ValueError, match=r"mIoUx.*\['zebra'\]"):
        metric.dataset_meta = dict(classes=('a', 'b'))
    # The default subsets need the 16 SYNTHIA classes: a 16-class dataset
    # is fine, one without 'wall' is not.
    UDAIoUMetric().dataset_meta = dict(classes=SYNTHIA16)
    with pytest.raises(ValueError, match=r"mIoU16.*\['wall'\]"):
        UDAIoUMetric().dataset_meta = dict(
            classes=tuple(c for c in CITYSCAPES if c != 'wall'))


def test_format_only_writes_predictions(tmp_path):
    out_dir = tmp_path / 'preds'
    metric = UDAIoUMetric(
        class_subsets=None, output_dir=str(out_dir), format_only=True)
    pred = torch.tensor([[0, 2], [1, 1]])
    result = run_metric(metric, ('a', 'b', 'c'), [
        make_sample(pred, torch.full((2, 2), 255), img_path='x/frame_7.jpg')
    ])
    assert result == {}
    written = np.array(Image.open(out_dir / 'frame_7.png'))
    np.testing.assert_array_equal(written, pred.numpy())


# ---------------------------------------------------------------- 2 processes
NUM_DIST_SAMPLES = 5  # odd: the sampler pads rank 1 with sample 0


def dist_samples():
    gen = torch.Generator().manual_seed(1)
    samples = []
    for i in range(NUM_DIST_SAMPLES):
        gt = torch.randint(0, 19, (12, 12), generator=gen)
        gt[:2] = 255
        pred = torch.where(
            torch.rand(12, 12, generator=gen) < 0.5, gt.clamp(max=18),
            torch.randint(0, 19, (12, 12), generator=gen))
        samples.append(make_sample(pred, gt, img_path=f'{i}.png'))
    return samples


def evaluate_rank(rank, world_size, init_method, out_file):
    torch.set_num_threads(1)
    dist.init_process_group(
        'gloo',
        init_method=init_method,
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=60))
    try:
        samples = dist_samples()
        # DistributedSampler order: rank r takes r, r + world, ..., padded
        # to equal length by wrapping around.
        per_rank = math.ceil(len(samples) / world_size)
        indices = list(range(len(samples)))
        indices += indices[:per_rank * world_size - len(indices)]
        metric = UDAIoUMetric()
        evaluator = Evaluator(metric)
        evaluator.dataset_meta = dict(classes=CITYSCAPES)
        for i in indices[rank::world_size]:
            evaluator.process([samples[i]])
        result = evaluator.evaluate(len(samples))
        if rank == 0:
            with open(out_file, 'w') as f:
                json.dump(
                    dict(
                        result=result,
                        confusion=metric.confusion_matrix.tolist()), f)
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_equals_single_process(tmp_path):
    out_file = str(tmp_path / 'rank0.json')
    context = mp.start_processes(
        evaluate_rank,
        args=(2, file_init_method(str(tmp_path)), out_file),
        nprocs=2,
        join=False,
        start_method='spawn')
    deadline = time.monotonic() + 120
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail('2-process evaluation did not finish in 120 s')
    with open(out_file) as f:
        distributed = json.load(f)

    single_metric = UDAIoUMetric()
    single = run_metric(single_metric, CITYSCAPES, dist_samples())
    np.testing.assert_array_equal(
        np.array(distributed['confusion']), single_metric.confusion_matrix)
    # the padded duplicate of sample 0 must not be counted
    valid_pixels = NUM_DIST_SAMPLES * 10 * 12
    assert single_metric.confusion_matrix.sum() == valid_pixels
    assert distributed['result'] == single
