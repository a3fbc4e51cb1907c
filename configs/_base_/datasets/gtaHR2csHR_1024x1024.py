# GTA5 -> Cityscapes at HRDA's resolution (lhoyer/HRDA@c370b5b
# configs/_base_/datasets/uda_gtaHR_to_cityscapesHR_1024x1024.py): GTA5
# resized to fit 2560x1440 (aspect kept: 1914x1052 -> 2560x1407), Cityscapes
# at 2048x1024, random 1024x1024 crops (cat_max_ratio=0.75 on the labelled
# source only), flip 0.5, 2 source + 2 target images per GPU, one loader
# worker; Cityscapes val at full 2048x1024 (the model's test_cfg slides
# 1024x1024 windows). The official Pad(1024) is a no-op for these sizes and
# left out; the official target pipeline's LoadAnnotations is dropped
# (target labels are never used for training; UDADataset refuses them).
# Rare-class sampling is off here; HRDA turns it on with
# rare_class_sampling=dict(min_pixels=3000, class_temp=0.01,
# min_crop_ratio=2.0) (configs/_base_/uda/hrda.py).
_base_ = ['./gta2cs_adaptsegnet.py']
crop_size = (1024, 1024)

source_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='Resize', scale=(2560, 1440), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
target_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 1024), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    # MultiScaleFlipAug(img_scale=(2048, 1024), flip=False): one keep-ratio
    # resize, the identity for Cityscapes
    dict(type='Resize', scale=(2048, 1024), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=2,  # samples_per_gpu=2
    num_workers=1,  # workers_per_gpu=1 (gtaHR2csHR_hrda.py)
    persistent_workers=True,
    dataset=dict(
        source=dict(pipeline=source_train_pipeline),
        target=dict(pipeline=target_train_pipeline)))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
