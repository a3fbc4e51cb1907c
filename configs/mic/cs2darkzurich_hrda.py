# MIC(HRDA) Cityscapes -> Dark Zurich (MIC paper Table 2: 60.2 mIoU on the
# Dark Zurich test split, mean of 3 seeds, recalled, not verified here):
# lhoyer/MIC @ 2f932a9, seg/experiments.py id 80, row ('cityscapesHR',
# 'darkzurichHR', 'separate'): configs/mic/cs2acdc_hrda.py with the Dark
# Zurich night target (cs2darkzurich_1024x1024.py; no pseudo-label margins,
# mask_mode 'separate'); seeds 0, 1, 2 (seed 0 here).
_base_ = [
    '../_base_/uda/hrda.py',
    '../_base_/datasets/cs2darkzurich_1024x1024.py',
    '../_base_/default_runtime.py',
    '../_base_/uda/mic.py',
]
model = dict(methods=_base_.model.methods + [
    dict(_base_.mic_method, mask_mode='separate')
])
