# Source-only DINOv2 ViT-L/14 on GTA5, evaluated on Cityscapes: the row a
# VFM-UDA result must be compared with (VFM-era UDA gains over a
# source-only VFM are small: Englert et al., "What is the Added Value of UDA
# in the VFM Era?", CVPRW 2025). tue-mps/vfm-uda@e154d8f
# supervised_vit_vanilla.yaml with model_name dinov2_vitl14:
# SupervisedVITGeneric (random_aug_weak on the source, CE), the network,
# data and schedule of gta2cs_dinov2_vitl_mic.py except the encoder lr
# multiplier, 0.01 (SupervisedVITGeneric's default; the yaml does not set
# it). No official number is published for this row in the repository.
_base_ = ['./gta2cs_dinov2_vitl_mic.py']
model = dict(methods=[])
custom_hooks = []
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys=dict(backbone=dict(lr_mult=0.01))))
