# SYNTHIA -> Cityscapes, DAFormer data recipe (lhoyer/DAFormer
# configs/_base_/datasets/uda_synthia_to_cityscapes_512x512.py):
# gta2cs_512x512.py (512x512 random crops, cat_max_ratio=0.75 on the labelled
# source only, flip 0.5, no photometric distortion, 2 source + 2 target
# images per GPU, Cityscapes val whole image at 1024x512 against
# full-resolution labels; UDAIoUMetric reports mIoU16/mIoU13) with
# SYNTHIA-RAND-CITYSCAPES as the source, resized to fit 1280x760.
_base_ = ['./gta2cs_512x512.py']
source_dataset_type = 'SynthiaDataset'
source_data_root = 'data/synthia'
source_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='Resize', scale=(1280, 760), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(512, 512), cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    dataset=dict(
        source=dict(
            type=source_dataset_type,
            data_root=source_data_root,
            pipeline=source_train_pipeline)))
