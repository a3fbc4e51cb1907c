# Cityscapes -> ACDC at HRDA's resolution (MIC/HRDA Table "CS -> ACDC"):
# lhoyer/MIC @ 2f932a9,
# seg/configs/_base_/datasets/uda_cityscapesHR_to_acdcHR_1024x1024.py (the
# same file as lhoyer/HRDA's). Source: Cityscapes train at 2048x1024, random
# 1024x1024 crops with cat_max_ratio 0.75, flip 0.5. Target: ACDC train, all
# four conditions merged (read in the download layout, see ACDCDataset), at
# 1920x1080, random 1024x1024 crops, flip 0.5; no labels loaded. Evaluation:
# ACDC val at 1920x1080 (the paper reports the test split through the ACDC
# server). 2 source + 2 target images per GPU (samples_per_gpu=2).
# No pseudo-label margins: ACDC has no rectification artefacts
# (experiments.py: plcrop only for Cityscapes targets).
crop_size = (1024, 1024)
source_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='Resize', scale=(2048, 1024), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
# The target pipeline never loads labels (UDADataset refuses it).
target_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1920, 1080), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1920, 1080), keep_ratio=True),
    # Labels are loaded after Resize so they stay at full resolution.
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=1,  # workers_per_gpu=1 (gtaHR2csHR_mic_hrda.py)
    persistent_workers=True,
    sampler=dict(type='UDAPairSampler', shuffle=True),
    dataset=dict(
        type='UDADataset',
        source=dict(
            type='CityscapesDataset',
            data_root='data/cityscapes',
            data_prefix=dict(
                img_path='leftImg8bit/train', seg_map_path='gtFine/train'),
            pipeline=source_train_pipeline),
        target=dict(
            type='ACDCDataset',
            data_root='data/acdc',
            split='train',
            conditions=('fog', 'night', 'rain', 'snow'),
            pipeline=target_train_pipeline),
        # experiments.py id 80 / HRDA id 49: RCS on the Cityscapes source
        # (statistics from tools/dataset_converters/cityscapes.py)
        rare_class_sampling=dict(
            min_pixels=3000, class_temp=0.01, min_crop_ratio=2.0)))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='ACDCDataset',
        data_root='data/acdc',
        split='val',
        conditions=('fog', 'night', 'rain', 'snow'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='UDAIoUMetric')
test_evaluator = val_evaluator
