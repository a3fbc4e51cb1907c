# T2S-DA on a vision foundation model, GTA5 -> Cityscapes: composition of
# three components, no published recipe. configs/vfm/gta2cs_dinov2_vitl_mic.py
# (DINOv2 ViT-L/14 + VFM-UDA head, SelfTraining with flip-averaged
# pseudo-labels + token-masked consistency, official VFM-UDA values) plus
# the T2S method and its warm-up from configs/_base_/uda/t2s.py
# (reconstructed values, docs/t2s.md). The projection head reads the
# VFM-UDA head's pre-classifier feature: 256 channels (1024 // 4), 320x320
# for a 1024 crop (80x80 tokens of the 1120 px ViT input, upsampled x4), so
# T2S's 256-channel projection head fits unchanged.
_base_ = ['../vfm/gta2cs_dinov2_vitl_mic.py', '../_base_/uda/t2s.py']
model = dict(methods=_base_.model.methods + [_base_.t2s_method])
custom_hooks = _base_.custom_hooks + [_base_.t2s_warmup_hook]
