# DeepLab-V2 ResNet-101 as AdaptSegNet (model/deeplab_multi.py) and PLCA
# (model/resnet.py, model/segmentation/deeplabv2.py) build it, initialised from
# the DeepLab ImageNet (Caffe) weights. Plain mmseg EncoderDecoder: the UDA
# configs wrap it in UDASegmentor. Load with
# custom_imports=dict(imports=['mmseg_uda']).
#
# Pretrained weights: convert either AdaptSegNet's
# DeepLab_resnet_pretrained_init-f81d91e8.pth or PLCA's
# model/resnet101-imagenet.pth (user-supplied; nothing is downloaded) with
#   python tools/model_converters/deeplab_resnet2mmseg.py SRC \
#       pretrained/deeplab_resnet101_imagenet_mmseg.pth
#
# Stem max-pool: the official networks (AdaptSegNet ResNetMulti, ADVENT
# get_deeplab_v2, PLCA model/resnet.py) use MaxPool2d(3, 2, padding=1,
# ceil_mode=True), mmseg's ResNet floor mode; DeepLabV2ResNet is mmseg's
# ResNet with the ceil-mode pool, so the stride-8 maps have the official size
# at every input size (e.g. 1024x512 -> 129x65, 1280x720 -> 161x91,
# 1460x730 -> 183x92, 321x321 -> 41x41).

# PLCA trains BN (SyncBN when distributed; tools/train.py). AdaptSegNet freezes
# the BN affine parameters: override with dict(type='BN', requires_grad=False).
# The Runner reverts SyncBN to BN on one process; CPU/gloo runs must set BN.
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    # Caffe ImageNet statistics: BGR, 0-255, mean subtraction only (PLCA
    # tools/train.py::get_transform, AdaptSegNet IMG_MEAN).
    # mmseg loads images as BGR, so no channel swap.
    mean=[104.00698793, 116.66876762, 122.67891434],
    std=[1.0, 1.0, 1.0],
    bgr_to_rgb=False,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        # mmseg ResNet + ceil-mode stem max-pool (same parameter names).
        type='DeepLabV2ResNet',
        depth=101,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        # Plain 7x7 stem (conv1/bn1), as the Caffe network.
        deep_stem=False,
        # Stride on the first 1x1 conv of a bottleneck (the "# change" lines
        # of both codebases).
        style='caffe',
        # layer3 dilation 2, layer4 dilation 4, output stride 8.
        strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        # Every block of a dilated stage, the first included, uses the full
        # dilation in both codebases.
        contract_dilation=False,
        norm_cfg=norm_cfg,
        norm_eval=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='pretrained/deeplab_resnet101_imagenet_mmseg.pth')),
    decode_head=dict(
        type='DLV2Head',
        in_channels=2048,  # layer4
        in_index=3,
        dilations=(6, 12, 18, 24),
        # PLCA: bias=False, all four rates summed. AdaptSegNet/CDGA lineage:
        # bias=True, adaptsegnet_early_return=True (only rates 6 and 12 act).
        bias=False,
        adaptsegnet_early_return=False,
        num_classes=19,  # Cityscapes trainIds
        align_corners=False,
        # AdaptSegNet initialises the classifier with N(0, 0.01); PLCA keeps
        # PyTorch's default conv init (set init_cfg=None to reproduce it).
        init_cfg=dict(
            type='Normal', std=0.01, override=dict(name='aspp_modules')),
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    # Whole-image inference; the input size is set by the test pipeline
    # (1024x512 AdaptSegNet, 1460x730 PLCA).
    test_cfg=dict(mode='whole'))
