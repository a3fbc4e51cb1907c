# T2S-DA on DeepLab-V2 R101, GTA5 -> Cityscapes: the DACS-on-DLV2 base of
# configs/daformer/gta2cs_dlv2.py (DAFormer's re-training of DACS: EMA alpha
# 0.99, no RCS/FD/pseudo-label crop, AdamW/poly10warm 40k) plus the T2S
# module. Only the config changes from configs/t2s/gta2cs.py: the projection
# head reads DLV2Head's pre-classifier feature, the 2048-ch layer4 map
# (stride 8), and the EMA projection head follows the teacher's alpha 0.99.
# All other T2S values, the StyleAugmentor style engine included, are those
# of configs/t2s/gta2cs.py (docs/t2s.md); the paper's DeepLab-V2 numbers are
# not known here.
_base_ = ['../daformer/gta2cs_dlv2.py', '../_base_/uda/t2s.py']
t2s_dlv2 = dict(
    _base_.t2s_method,
    # DLV2Head feature = layer4 output, 2048 channels (the only change to
    # the network side of T2S)
    projection_head=dict(
        type='ProjectionHead',
        in_channels=2048,
        hidden_channels=256,
        out_channels=128,
        norm_cfg=dict(type='BN')),
    # EMATeacherHook alpha of the DACS base (0.99)
    projection_ema_alpha=0.99)
model = dict(methods=_base_.model.methods + [t2s_dlv2])
custom_hooks = _base_.custom_hooks + [_base_.t2s_warmup_hook]
