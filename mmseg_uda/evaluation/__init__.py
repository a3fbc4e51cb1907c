"""Evaluation components of mmseg-uda."""
from .metrics import UDAIoUMetric

__all__ = ['UDAIoUMetric']
