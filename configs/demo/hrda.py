# Built-in demo, HRDA (docs/hrda.md): daformer.py (the same self-training)
# on HRDA's multi-resolution segmentor, with every size of the official
# recipe (lhoyer/HRDA@c370b5b configs/hrda/gtaHR2csHR_hrda.py) divided by 8 so
# it fits the demo's images: the official 1024 training crop of the
# 2048x1024 Cityscapes image becomes the demo's 128 crop of its 256x128
# "Cityscapes" images (the source, 256x144, keeps its native size like
# HRDA's GTA5 at 2560x1407); the context branch sees the crop downscaled x0.5
# (64x64), the detail branch a 64x64 window at full resolution (official
# 512 in 1024); pseudo-labels from the context + an overlapping 64-window
# detail slide (stride 32); test: 128x128 windows at stride 64 over the
# 256x128 image (official 1024/512 over 2048x1024).
# Demo-sized like daformer.py: DeepLab-V2 head (HRDA's DLV2Head variant,
# output stride 8), no feature distance, no pseudo-label margins (the demo
# images have no rectification artefacts), EMA 0.99.
_base_ = ['./daformer.py']
model = dict(
    segmentor=dict(
        type='HRDAEncoderDecoder',
        decode_head=dict(
            type='HRDAHead',
            single_scale_head='DLV2Head',
            attention_classwise=True,
            hr_loss_weight=0.1),
        scales=[1, 0.5],
        hr_crop_size=(64, 64),
        feature_scale=0.5,
        # output stride 8 / context scale 0.5 = 16: the box lies on whole
        # context cells (HRDA's DLV2 variant uses 8, off by half a cell)
        crop_coord_divisible=16,
        hr_slide_inference=True,
        test_cfg=dict(mode='slide', crop_size=(128, 128), stride=(64, 64))))
