# GTA5 -> Cityscapes, DAFormer data recipe (lhoyer/DAFormer
# configs/_base_/datasets/uda_gta_to_cityscapes_512x512.py):
# gta2cs_adaptsegnet.py (same datasets, flip 0.5, no photometric distortion,
# Cityscapes val whole image at 1024x512 against full-resolution labels) with
# source resized to fit 1280x720 and target to 1024x512 (aspect kept),
# 512x512 random crops (cat_max_ratio=0.75 on the labelled source only) and
# 2 source + 2 target images per GPU.
# Rare-class sampling is off here; DAFormer experiments enable it with
# train_dataloader.dataset.rare_class_sampling=dict(
#     class_temp=0.01, min_pixels=3000, min_crop_ratio=0.5).
_base_ = ['./gta2cs_adaptsegnet.py']
crop_size = (512, 512)

source_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='Resize', scale=(1280, 720), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
# The target pipeline never loads labels (UDADataset refuses it).
target_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1024, 512), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=2,
    dataset=dict(
        source=dict(pipeline=source_train_pipeline),
        target=dict(pipeline=target_train_pipeline)))
