# SYNTHIA -> Cityscapes at HRDA's resolution (lhoyer/HRDA@c370b5b
# configs/_base_/datasets/uda_synthiaHR_to_cityscapesHR_1024x1024.py):
# gtaHR2csHR_1024x1024.py with SYNTHIA-RAND-CITYSCAPES as the source, resized
# to fit 2560x1520 (1280x760 -> 2560x1520), random 1024x1024 crops with
# cat_max_ratio=0.75, flip 0.5. UDAIoUMetric reports mIoU16/mIoU13.
_base_ = ['./gtaHR2csHR_1024x1024.py']
source_dataset_type = 'SynthiaDataset'
source_data_root = 'data/synthia'
source_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='Resize', scale=(2560, 1520), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(1024, 1024), cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    dataset=dict(
        source=dict(
            type=source_dataset_type,
            data_root=source_data_root,
            pipeline=source_train_pipeline)))
