# The built-in demo (tools/make_demo_data.py data/demo): synthetic street
# scenes, source "GTA" 144x256 flat-colour renderings, target "Cityscapes"
# 128x256 textured renderings of the same scene model, six classes (road,
# building, vegetation, sky, person, car) in the 19-class Cityscapes label
# space. Sized for a CPU: 128x128 crops, 4 source + 4 target images per
# iteration; evaluation at native size on the 50 target val images.
# `source_val_dataloader` (the 50 held-out source images) is not used by the
# Runner; swap it in as test_dataloader to measure source-only on source.
source_dataset_type = 'GTAVDataset'
source_data_root = 'data/demo/gta'
dataset_type = 'CityscapesDataset'
data_root = 'data/demo/cityscapes'
crop_size = (128, 128)

source_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
# The target pipeline never loads labels (UDADataset refuses it).
target_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]

train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='UDAPairSampler', shuffle=True),
    dataset=dict(
        type='UDADataset',
        source=dict(
            type=source_dataset_type,
            data_root=source_data_root,
            ann_file='train.txt',
            pipeline=source_train_pipeline),
        target=dict(
            type=dataset_type,
            data_root=data_root,
            data_prefix=dict(img_path='leftImg8bit/train'),
            pipeline=target_train_pipeline),
        rare_class_sampling=None))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
source_val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=source_dataset_type,
        data_root=source_data_root,
        ann_file='val.txt',
        pipeline=test_pipeline))
val_evaluator = dict(type='UDAIoUMetric')
test_evaluator = val_evaluator
