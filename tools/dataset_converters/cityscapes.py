"""Convert Cityscapes labels
(DATA_ROOT/gtFine/{train,val}/*/*_gtFine_labelIds.png) to trainIds
(*_gtFine_labelTrainIds.png); statistics are written for the train split.

Usage::

    python tools/dataset_converters/cityscapes.py DATA_ROOT [--nproc N] \
        [--size-mismatch {skip,resize}]

Re-running is safe and rewrites nothing that is already converted; the
rules are in mmseg_uda/datasets/conversion.py.
"""
import os.path as osp
import sys

try:
    from mmseg_uda.datasets.conversion import converter_main
except ImportError:  # a source checkout that is not pip-installed
    sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
        osp.abspath(__file__)))))
    from mmseg_uda.datasets.conversion import converter_main

if __name__ == '__main__':
    sys.exit(converter_main('cityscapes', __doc__.split('\n\n')[0]))
