# MIC(HRDA) Cityscapes -> ACDC (MIC paper Table 2: 70.4 mIoU on the ACDC
# test split, mean of 3 seeds, not verified here): lhoyer/MIC @ 2f932a9,
# seg/experiments.py id 80, row ('cityscapesHR', 'acdcHR', 'separate'): the
# HRDA self-training of configs/_base_/uda/hrda.py (network, DACS alpha
# 0.999, thing-class FD, AdamW, 40k iterations, slide inference) on
# Cityscapes 2048x1024 -> ACDC 1920x1080 with 1024 crops and RCS
# min_crop_ratio 2.0 on Cityscapes (cs2acdc_1024x1024.py); no pseudo-label
# margins ("plcrop is only necessary for Cityscapes as target domains",
# i.e. the plain target pipeline, pseudo_weight_ignore_top/bottom 0); MIC
# with mask_mode 'separate' (image 0 of the source and of the target batch,
# no colour augmentation), 64x64 blocks, ratio 0.7, lambda 1; seeds 0, 1, 2
# (seed 0 here).
_base_ = [
    '../_base_/uda/hrda.py',
    '../_base_/datasets/cs2acdc_1024x1024.py',
    '../_base_/default_runtime.py',
    '../_base_/uda/mic.py',
]
model = dict(methods=_base_.model.methods + [
    dict(_base_.mic_method, mask_mode='separate')
])
