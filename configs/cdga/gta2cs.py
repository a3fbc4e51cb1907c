# CDGA (Kim et al., AAAI 2021, reconstructed: docs/cdga.md), GTA5 ->
# Cityscapes, DeepLab-V2 R101, AdaptSegNet recipe (docs/cdga.md).
_base_ = [
    # model, CDGA, optimizers, warm-up, 150k of 250k iterations
    '../_base_/uda/cdga.py',
    # 1280x720 GTA5 / 1024x512 Cityscapes whole images, batch 1 + 1; val at
    # 1024x512 upsampled to 2048x1024 (AdaptSegNet's protocol).
    '../_base_/datasets/gta2cs_adaptsegnet.py',
    '../_base_/default_runtime.py',
]
