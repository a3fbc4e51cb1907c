# SYNTHIA -> Cityscapes, DAFormer data recipe (methods.md §1.5, §4.2;
# DAFormer configs/_base_/datasets/uda_synthia_to_cityscapes_512x512.py):
# source resized to fit 1280x760 and target to 1024x512 (aspect kept),
# 512x512 random crops (cat_max_ratio=0.75 on the labelled source only),
# flip 0.5, no photometric distortion; 2 source + 2 target images per GPU.
# Evaluation: Cityscapes val, whole image at 1024x512 against
# full-resolution labels (UDAIoUMetric reports mIoU16/mIoU13 for SYNTHIA).
# Rare-class sampling is off here; DAFormer experiments enable it with
# train_dataloader.dataset.rare_class_sampling=dict(
#     class_temp=0.01, min_pixels=3000, min_crop_ratio=0.5).
source_dataset_type = 'SynthiaDataset'
source_data_root = 'data/synthia'
dataset_type = 'CityscapesDataset'
data_root = 'data/cityscapes'
crop_size = (512, 512)

source_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='Resize', scale=(1280, 760), keep_ratio=True),
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
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1024, 512), keep_ratio=True),
    # Labels are loaded after Resize so they stay at full resolution.
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]

train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='UDAPairSampler', shuffle=True),
    dataset=dict(
        type='UDADataset',
        source=dict(
            type=source_dataset_type,
            data_root=source_data_root,
            pipeline=source_train_pipeline),
        target=dict(
            type=dataset_type,
            data_root=data_root,
            data_prefix=dict(img_path='leftImg8bit/train'),
            pipeline=target_train_pipeline),
        rare_class_sampling=None))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='UDAIoUMetric')
test_evaluator = val_evaluator
