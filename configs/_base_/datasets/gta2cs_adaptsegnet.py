# GTA5 -> Cityscapes, AdaptSegNet data recipe (wasidennis/AdaptSegNet @
# fca9ff0f, train_gta2cityscapes_multi.py): whole images, no
# crop: source resized to exactly 1280x720, target to 1024x512, random
# flip; 1 source + 1 target image per iteration. Evaluation: Cityscapes val,
# whole image at 1024x512 against full-resolution labels.
source_dataset_type = 'GTAVDataset'
source_data_root = 'data/gta'
dataset_type = 'CityscapesDataset'
data_root = 'data/cityscapes'

source_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='Resize', scale=(1280, 720), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
# The target pipeline never loads labels (UDADataset refuses it).
target_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1024, 512), keep_ratio=False),
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
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    # page-locked batches copy to the GPU faster (PyTorch ignores it, with a
    # warning, when there is no GPU)
    pin_memory=True,
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
