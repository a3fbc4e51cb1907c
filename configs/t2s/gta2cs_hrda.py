# T2S-DA on the MIC(HRDA) base, GTA5 -> Cityscapes: composition of three
# components, no published recipe. configs/mic/gta2cs_hrda.py (HRDA
# multi-resolution segmentor + SelfTraining + MaskedImageConsistency,
# official values) plus the T2S method and its warm-up from
# configs/_base_/uda/t2s.py (reconstructed values, docs/t2s.md).
_base_ = ['../mic/gta2cs_hrda.py', '../_base_/uda/t2s.py']
model = dict(methods=_base_.model.methods + [_base_.t2s_method])
custom_hooks = _base_.custom_hooks + [_base_.t2s_warmup_hook]
