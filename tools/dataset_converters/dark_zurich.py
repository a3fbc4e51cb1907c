"""Validate Dark Zurich and write missing trainId labels
(DATA_ROOT/gt/val/night/*/*_gt_labelIds.png -> *_gt_labelTrainIds.png next
to them; the download ships them, so a complete download is only checked:
every image in rgb_anon/val/night/ has its label, sizes agree, labels decode
as trainIds). The training images (rgb_anon/train/night/) have no labels.

Usage::

    python tools/dataset_converters/dark_zurich.py DATA_ROOT [--nproc N] \
        [--size-mismatch {skip,resize}]

DATA_ROOT is the folder where Dark_Zurich_train_anon.zip and
Dark_Zurich_val_anon.zip were extracted. Re-running is safe; the rules are
in mmseg_uda/datasets/conversion.py.
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
    sys.exit(converter_main('dark_zurich', __doc__.split('\n\n')[0]))
