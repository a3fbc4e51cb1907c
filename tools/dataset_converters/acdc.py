"""Validate ACDC and write missing trainId labels
(DATA_ROOT/gt/{fog,night,rain,snow}/{train,val}/*/*_gt_labelIds.png ->
*_gt_labelTrainIds.png next to them; ACDC ships them, so a complete download
is only checked: every image in rgb_anon/<condition>/<split>/ has its label,
sizes agree, labels decode as trainIds).

Usage::

    python tools/dataset_converters/acdc.py DATA_ROOT [--nproc N] \
        [--size-mismatch {skip,resize}]

DATA_ROOT is the folder where rgb_anon_trainvaltest.zip and gt_trainval.zip
(https://acdc.vision.ee.ethz.ch/download) were extracted, in their own
condition/split/sequence layout (no restructuring needed). Re-running is
safe; the rules are in mmseg_uda/datasets/conversion.py.
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
    sys.exit(converter_main('acdc', __doc__.split('\n\n')[0]))
