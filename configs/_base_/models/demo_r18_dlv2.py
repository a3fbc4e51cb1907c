# Small DeepLab-V2 for the built-in demo on a CPU (README "Quick start"):
# mmseg's ResNetV1c-18 at a quarter of the width (16 stem/base
# channels), output stride 8 like DeepLab-V2, DLV2Head with dilations scaled
# to the 128x128 demo crops (a 16x16 feature map). Random init: no
# pretrained weights can be downloaded, and small convnets learn the demo
# from scratch within a few hundred iterations.
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='ResNetV1c',
        depth=18,
        stem_channels=16,
        base_channels=16,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        norm_cfg=norm_cfg,
        norm_eval=False,
        contract_dilation=True,
        style='pytorch',
        init_cfg=None),
    decode_head=dict(
        type='DLV2Head',
        in_channels=128,  # layer4 of the 16-wide ResNet-18
        in_index=3,
        dilations=(1, 3, 6, 9),
        num_classes=19,  # Cityscapes trainIds (the demo uses six of them)
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
