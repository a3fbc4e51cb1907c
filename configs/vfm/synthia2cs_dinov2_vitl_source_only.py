# Source-only DINOv2 ViT-L/14 on SYNTHIA, evaluated on Cityscapes (mIoU16 /
# mIoU13): gta2cs_dinov2_vitl_source_only.py's recipe on the data of
# synthia2cs_dinov2_vitl_mic.py.
_base_ = ['./synthia2cs_dinov2_vitl_mic.py']
model = dict(methods=[])
custom_hooks = []
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys=dict(backbone=dict(lr_mult=0.01))))
