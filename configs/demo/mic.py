# Built-in demo, MIC masked image consistency (Hoyer et al., CVPR 2023) on
# the demo DAFormer self-training (daformer.py): the student also learns
# the teacher's target pseudo-labels from colour-augmented target crops
# with 70 % of their blocks masked. Demo-sized: blocks of 8 px on the
# 128-pixel crops, the proportion of MIC(DAFormer)'s 32 px on 512 crops
# (lhoyer/MIC experiments.py id 81); every other MIC value is the official
# one (configs/_base_/uda/mic.py).
_base_ = ['./daformer.py', '../_base_/uda/mic.py']
model = dict(methods=_base_.model.methods + [
    dict(
        _base_.mic_method,
        mask_generator=dict(type='block', mask_ratio=0.7, mask_block_size=8))
])
