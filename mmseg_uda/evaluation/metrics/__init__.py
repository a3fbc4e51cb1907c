"""Evaluation metrics (registered into mmseg's ``METRICS``)."""
from .uda_iou_metric import (DEFAULT_CLASS_SUBSETS, SYNTHIA_13_CLASSES,
                             SYNTHIA_16_CLASSES, UDAIoUMetric,
                             compute_confusion_matrix,
                             confusion_matrix_to_scores)

__all__ = [
    'DEFAULT_CLASS_SUBSETS', 'SYNTHIA_13_CLASSES', 'SYNTHIA_16_CLASSES',
    'UDAIoUMetric', 'compute_confusion_matrix', 'confusion_matrix_to_scores'
]
