# Built-in demo, vision-foundation-model path, source only: source_only.py
# with the tiny ViT + VFM-UDA head of configs/_base_/models/demo_vit_tiny.py
# in place of the small DeepLab-V2 (same data, schedule and seed). The row
# next to it, vfm_mic.py, is the VFM-UDA recipe on the same network, so the
# demo table shows what adaptation adds to a ViT, as the configs/vfm/*.py
# pairs do at full scale.
_base_ = ['./source_only.py', '../_base_/models/demo_vit_tiny.py']
model = dict(segmentor=dict(_base_.vit_demo_model, _delete_=True))
