# Tiny plain ViT for the built-in demo's vision-foundation-model path
# (configs/demo/vfm_*.py): the DINOv2VisionTransformer backbone with a
# dict arch (4 blocks of width 96, 3 heads, patch 8, so a 128x128 demo crop
# is a 16x16 token grid; its position-embedding grid is 16x16 and is
# interpolated for the 128x256 evaluation images, as DINOv2's is) and
# VFM-UDA's lightweight upsampling head (ViTUpsampleHead: two stride-2
# transposed convolutions, logits at stride 2). Random init: no DINOv2
# weights can be downloaded here; the configs/vfm/*.py files use the real
# ViT-L with its DINOv2 weights. The demo shows that the VFM recipe runs;
# its numbers say nothing about foundation-model features.
# Defines only `vit_demo_model` (not `model`), so it can sit next to
# configs/demo/source_only.py's own model base.
vit_demo_model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255),
    backbone=dict(
        type='DINOv2VisionTransformer',
        arch=dict(embed_dims=96, num_layers=4, num_heads=3),
        patch_size=8,
        img_size=128,
        out_indices=(3, ),
        final_norm=True),
    decode_head=dict(
        type='ViTUpsampleHead',
        in_channels=96,
        channels=24,  # in_channels // 4, as VFM-UDA
        num_classes=19,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
