# VFM-UDA on SYNTHIA -> Cityscapes with DINOv2 ViT-L/14: the recipe of
# gta2cs_dinov2_vitl_mic.py unchanged, SYNTHIA loaded as the VFM-UDA++ code
# loads it (configs/_base_/datasets/synthiaHR2csHR_vfmuda_1024x1024.py).
# tue-mps/vfm-uda has no SYNTHIA config; VFM-UDA++ (Englert et al., ICCVW
# 2025, tue-mps/vfm-uda-plusplus@effbb03 README) reports 69.7 mIoU16 with
# its own network (ViT-B + ViT-Adapter), which this config does not build:
# treat this as the VFM-UDA recipe on SYNTHIA, without an official target.
_base_ = [
    '../_base_/uda/vfm_uda.py',
    '../_base_/datasets/synthiaHR2csHR_vfmuda_1024x1024.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(
    dataset=dict(rare_class_sampling=_base_.vfm_uda_rare_class_sampling))
randomness = dict(seed=42)
