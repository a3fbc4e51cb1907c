# DeepLab-V2 with an mmseg ResNetV1c-101 backbone, as DAFormer builds it
# (lhoyer/DAFormer configs/_base_/models/deeplabv2_r50-d8.py, depth raised to
# 101 by its R101 configs). Plain mmseg EncoderDecoder: the UDA configs wrap it
# in UDASegmentor. Load with custom_imports=dict(imports=['mmseg_uda']).
#
# Pretrained weights: open-mmlab's ImageNet ResNetV1c-101, RGB input. Nothing
# is downloaded at run time; fetch it once to pretrained/ (relative to the
# working directory) from
#   https://download.openmmlab.com/pretrain/third_party/resnet101_v1c-e67eebb6.pth
# (the file mmseg's 'open-mmlab://resnet101_v1c' resolves to). This is the
# usual MMSeg substitute for the DeepLab Caffe ImageNet weights: deep 3x3
# stem and pytorch-style strides instead of the 7x7 Caffe stem; use
# deeplabv2_r101_caffe.py for the original network.

# SyncBN as in mmseg's DeepLab configs; the Runner reverts it to BN when not
# distributed, and CPU/gloo runs must set BN (SyncBatchNorm needs GPU
# modules; DDP rejects it on CPU).
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    # ImageNet RGB statistics of the open-mmlab weights (mmseg configs).
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
        depth=101,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        # layer3/layer4 dilated instead of strided: output stride 8
        # (DeepLab-V2; DAFormer deeplabv2_r50-d8.py).
        strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        norm_cfg=norm_cfg,
        norm_eval=False,
        style='pytorch',
        # DAFormer/mmseg -d8 setting: the first block of a dilated stage uses
        # half the dilation.
        contract_dilation=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='pretrained/resnet101_v1c-e67eebb6.pth')),
    decode_head=dict(
        type='DLV2Head',
        in_channels=2048,  # layer4
        in_index=3,
        # DeepLab-V2 ASPP rates (Chen et al.); DAFormer default. PLCA sums all
        # four; AdaptSegNet-lineage methods set adaptsegnet_early_return=True.
        dilations=(6, 12, 18, 24),
        bias=True,  # DAFormer/AdaptSegNet; PLCA uses bias=False
        num_classes=19,  # Cityscapes trainIds
        align_corners=False,
        init_cfg=dict(
            type='Normal', std=0.01, override=dict(name='aspp_modules')),
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    # Whole-image inference (DAFormer/AdaptSegNet protocol).
    test_cfg=dict(mode='whole'))
