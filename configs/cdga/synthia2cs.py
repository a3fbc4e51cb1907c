# CDGA (Kim et al., AAAI 2021, reconstructed: docs/cdga.md), SYNTHIA ->
# Cityscapes, DeepLab-V2 R101, AdaptSegNet recipe (the GTA5 one, as
# AdaptSegNet uses it for SYNTHIA; docs/cdga.md).
_base_ = [
    # model, CDGA, optimizers, warm-up, 150k of 250k iterations; 19-way head,
    # mIoU16/mIoU13 reported from the per-class IoUs (docs/cdga.md)
    '../_base_/uda/cdga.py',
    # 1280x760 SYNTHIA / 1024x512 Cityscapes whole images, batch 1 + 1; val
    # at 1024x512 upsampled to 2048x1024 (AdaptSegNet's protocol).
    '../_base_/datasets/synthia2cs_adaptsegnet.py',
    '../_base_/default_runtime.py',
]
