"""Convert SYNTHIA-RAND-CITYSCAPES labels (DATA_ROOT/GT/LABELS/*.png, 16-bit,
class id in the R channel) to Cityscapes trainIds
(GT/LABELS/*_labelTrainIds.png) and write the rare-class-sampling
statistics.

Usage::

    python tools/dataset_converters/synthia.py DATA_ROOT [--nproc N] \
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
    sys.exit(converter_main('synthia', __doc__.split('\n\n')[0]))
