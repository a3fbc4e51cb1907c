# DAFormer network: MiT-B5 encoder + DAFormer decoder (context-aware fusion
# with depthwise-separable ASPP), as lhoyer/DAFormer
# configs/_base_/models/daformer_sepaspp_mitb5.py (on top of
# daformer_conv1_mitb5.py) builds it (docs/self_training.md). Plain mmseg
# EncoderDecoder: the UDA configs wrap it in UDASegmentor. Load with
# custom_imports=dict(imports=['mmseg_uda']).
#
# Pretrained weights (nothing is downloaded at run time): SegFormer's
# ImageNet-1k MiT-B5 (`mit_b5.pth` from the NVlabs/SegFormer README, the file
# DAFormer puts in pretrained/), converted to mmseg 1.x key names with the
# converter that ships inside the mmsegmentation wheel:
#
#   mkdir -p pretrained/segformer   # put the downloaded mit_b5.pth there
#   python "$(python -c 'import mmseg, os; print(os.path.dirname(mmseg.__file__))')/.mim/tools/model_converters/mit2mmseg.py" \
#       pretrained/segformer/mit_b5.pth pretrained/mit_b5.pth
#
# (open-mmlab also publishes the same weights already converted:
# https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/mit_b5_20220624-658746d9.pth
# -> save as pretrained/mit_b5.pth.) Paths are relative to the working dir.

# Plain BN in the decoder, 2 images per GPU, one GPU (DAFormer
# daformer_conv1_mitb5.py norm_cfg). With several GPUs either keep 2 images
# per GPU (per-GPU statistics) or set SyncBN.
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    # ImageNet RGB statistics (DAFormer img_norm_cfg, to_rgb=True).
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        # mmseg 1.x MiT with SegFormer/DAFormer `mit_b5` settings
        # (DAFormer mmseg/models/backbones/mix_transformer.py::mit_b5).
        type='MixVisionTransformer',
        in_channels=3,
        embed_dims=64,  # stage widths 64, 128, 320, 512
        num_stages=4,
        num_layers=[3, 6, 40, 3],  # depths of MiT-B5
        num_heads=[1, 2, 5, 8],
        patch_sizes=[7, 3, 3, 3],  # overlapping patch embeddings
        strides=[4, 2, 2, 2],  # output strides 4, 8, 16, 32
        sr_ratios=[8, 4, 2, 1],  # efficient self-attention reduction
        out_indices=(0, 1, 2, 3),
        mlp_ratio=4,
        qkv_bias=True,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.1,  # mit_b5 drop_path_rate
        norm_cfg=dict(type='LN', eps=1e-6),  # partial(LayerNorm, eps=1e-6)
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/mit_b5.pth')),
    decode_head=dict(
        type='DAFormerHead',
        in_channels=[64, 128, 320, 512],
        in_index=[0, 1, 2, 3],
        channels=256,  # fused feature width
        embed_dims=256,  # decoder_params.embed_dims (mlp embeddings)
        fusion='aspp',  # fusion_cfg type='aspp'
        fusion_dilations=(1, 6, 12, 18),  # fusion_cfg dilations
        fusion_separable=True,  # sep=True (depthwise separable)
        fusion_pool=False,  # pool=False (no image pooling)
        dropout_ratio=0.1,
        num_classes=19,  # Cityscapes trainIds
        norm_cfg=norm_cfg,
        act_cfg=dict(type='ReLU'),
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    # Whole-image inference (DAFormer test_cfg mode='whole'); the dataset
    # base resizes Cityscapes val to 1024x512.
    test_cfg=dict(mode='whole'))
