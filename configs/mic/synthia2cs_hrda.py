# MIC(HRDA) SYNTHIA -> Cityscapes (MIC paper Table 2; 67.3 mIoU16 recalled
# from the paper, not verified here): lhoyer/MIC @ 2f932a9,
# seg/experiments.py id 80, row ('synthiaHR', 'cityscapesHR',
# 'separatetrgaug'): the HRDA SYNTHIA recipe (configs/hrda/synthia2cs.py)
# plus the same MIC keys as MIC(HRDA) GTA -> Cityscapes
# (configs/_base_/uda/mic.py); seeds 0, 1, 2 (seed 0 here).
_base_ = ['../hrda/synthia2cs.py', '../_base_/uda/mic.py']
model = dict(methods=_base_.model.methods + [_base_.mic_method])
