# VFM-UDA network (Englert et al., CVPRW 2024): a DINOv2 ViT-L/14 encoder
# and VFM-UDA's lightweight upsampling head, as
# tue-mps/vfm-uda@e154d8f models/vit_variants/vit_lightweight_head.py
# (VITLightweightHead) builds it. Plain mmseg EncoderDecoder: the UDA
# configs wrap it in UDASegmentor. Load with
# custom_imports=dict(imports=['mmseg_uda']).
#
# Pretrained weights (nothing is downloaded at run time): DINOv2's ViT-L/14
# checkpoint `dinov2_vitl14_pretrain.pth` (facebookresearch/dinov2 README,
# the file torch.hub.load('facebookresearch/dinov2', 'dinov2_vitl14')
# loads). Put it in pretrained/; the backbone reads the official key names
# directly; tools/model_converters/dinov2_to_mmseg_uda.py converts and
# checks it once:
#   python tools/model_converters/dinov2_to_mmseg_uda.py \
#       pretrained/dinov2_vitl14_pretrain.pth \
#       pretrained/dinov2_vitl14_mmseg_uda.pth --arch large
# ). Paths are relative to the working dir.
data_preprocessor = dict(
    type='SegDataPreProcessor',
    # ImageNet RGB statistics (datasets/utils/util.py::normalize on [0, 1]
    # images, the same statistics on the 0-255 scale)
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='DINOv2VisionTransformer',
        # torch.hub 'dinov2_vitl14': ViT-L/14, 24 blocks of width 1024,
        # LayerScale, position embeddings for 518 px (37x37 tokens),
        # interpolated to the input as DINOv2 does
        arch='large',
        patch_size=14,
        img_size=518,
        # in_img_scale 1.1: the 1024 crop enters the ViT at
        # (1024 * 1.1) // 14 * 14 = 1120 px (80x80 tokens)
        input_scale=1.1,
        # the last block's tokens after the final LayerNorm
        # (forward_features: encoder.norm, class token dropped)
        out_indices=(23, ),
        final_norm=True,
        # the hub model's defaults: no stochastic depth
        drop_path_rate=0.0,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='pretrained/dinov2_vitl14_pretrain.pth')),
    decode_head=dict(
        type='ViTUpsampleHead',
        in_channels=1024,
        channels=256,  # embed_dim // 4
        mid_channels=512,  # embed_dim // 2
        num_classes=19,  # Cityscapes trainIds
        align_corners=False,
        # F.cross_entropy(..., ignore_index=255): the mean over labelled
        # pixels (the mixed/masked losses weight every pixel: SelfTraining)
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
            avg_non_ignore=True)),
    train_cfg=dict(),
    # uda_vit_generic.py::eval_step -> slide_inference_pre_cropped: 1024x1024
    # windows, stride 512, logits summed and divided by the window count
    test_cfg=dict(mode='slide', crop_size=(1024, 1024), stride=(512, 512)))
