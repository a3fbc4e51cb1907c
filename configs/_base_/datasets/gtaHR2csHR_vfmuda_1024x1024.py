# GTA5 -> Cityscapes as VFM-UDA feeds it (Englert et al., CVPRW 2024;
# tue-mps/vfm-uda@e154d8f datasets/uda_multitrain_multival_datamodule.py and
# datasets/transform/train/uda_transform.py::UDATransform): every image is
# resized so that its short side is img_size x s, s ~ U(0.9, 1.1) (GTA5:
# 1440, Cityscapes: 1024, in_img_scale 1.0), padded to the crop if smaller
# (image 0, label 255) and cropped to 1024x1024, flipped with p 0.5
# (training/utils/batched_rand_hflip.py). The target's pseudo-label margins
# (UDATransform.pseudo_weight_ignore_*: 3 % top, 25 % bottom, 3 % left and
# right of the original image) are a pipeline mask (GenerateValidPseudoMask).
# Rare-class sampling (RareClassSamplerDataset: min_pixels 3000,
# temperature 0.05, min_crop_ratio 1024^2 / (512 x 1024) = 2.0, crops with
# cat_max_ratio 0.75) is set by the leaf configs. Validation: Cityscapes
# resized to short side 1024 (the identity for 2048x1024;
# datasets/transform/inference/resize_and_crop_transform.py), sliding
# 1024x1024 windows with stride 512 (the model's test_cfg).
_base_ = ['./gta2cs_adaptsegnet.py']
crop_size = (1024, 1024)

source_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    # short side 1440 x U(0.9, 1.1); the long-side bound never binds
    dict(type='RandomResize', scale=(8192, 1440), ratio_range=(0.9, 1.1),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='Pad', size=crop_size, pad_val=dict(img=0, seg=255)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
target_train_pipeline = [
    dict(type='LoadImageFromFile'),
    # 3 % / 25 % / 3 % / 3 % of the 1024x2048 Cityscapes image
    dict(type='GenerateValidPseudoMask', margins=(30, 256, 61, 61),
         size=(1024, 2048)),
    dict(type='RandomResize', scale=(8192, 1024), ratio_range=(0.9, 1.1),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='Pad', size=crop_size, pad_val=dict(img=0, seg=255)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputsWithValidMask'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(8192, 1024), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8,  # uda_vit_vanilla.yaml data.batch_size 8, devices 1
    num_workers=4,  # train_num_workers 4
    persistent_workers=True,
    dataset=dict(
        source=dict(pipeline=source_train_pipeline),
        target=dict(pipeline=target_train_pipeline)))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
