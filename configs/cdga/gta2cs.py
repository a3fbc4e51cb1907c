# CDGA (Kim et al., AAAI 2021, reconstructed: docs/cdga.md), GTA5 ->
# Cityscapes, DeepLab-V2 R101, AdaptSegNet recipe (methods.md §3.4).
_base_ = [
    # model, CDGA, optimizers, warm-up, 150k of 250k iterations
    '../_base_/uda/cdga.py',
    # 1280x720 GTA5 / 1024x512 Cityscapes whole images, batch 1 + 1; val at
    # 1024x512 upsampled to 2048x1024 (methods.md §1.4, §3.4).
    '../_base_/datasets/gta2cs_adaptsegnet.py',
    '../_base_/default_runtime.py',
]
