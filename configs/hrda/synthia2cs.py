# HRDA (Hoyer et al., ECCV 2022) SYNTHIA -> Cityscapes. HRDA ships no SYNTHIA
# config file; lhoyer/HRDA@c370b5b experiments.py id 40 generates it from the
# GTA5 recipe (configs/hrda/gta2cs.py) with source 'synthiaHR' (2560x1520,
# uda_synthiaHR_to_cityscapesHR_1024x1024.py), RCS min_crop_ratio 2.0 and
# RCS statistics from SYNTHIA, seeds 0, 1, 2. Reference: 65.8 mIoU16 (mean of
# 3 seeds; HRDA README / paper).
_base_ = [
    '../_base_/uda/hrda.py',
    # SYNTHIA 2560x1520 / Cityscapes 2048x1024, 1024x1024 crops
    '../_base_/datasets/synthiaHR2csHR_1024x1024.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(
    dataset=dict(
        # crop_pseudo_margins=[30, 240, 30, 30] (plcrop='v2')
        target=dict(pipeline=_base_.hrda_target_train_pipeline),
        rare_class_sampling=_base_.hrda_rare_class_sampling))
# experiments.py id 40 runs seeds 0, 1, 2; seed 0 here
randomness = dict(seed=0)
