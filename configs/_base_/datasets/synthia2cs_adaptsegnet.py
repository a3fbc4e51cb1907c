# SYNTHIA -> Cityscapes, AdaptSegNet data recipe (wasidennis/AdaptSegNet):
# gta2cs_adaptsegnet.py (whole images, no crop, target 1024x512, random flip,
# 1 source + 1 target image per iteration, Cityscapes val at 1024x512 against
# full-resolution labels) with SYNTHIA-RAND-CITYSCAPES as the source, resized
# to exactly its native 1280x760.
_base_ = ['./gta2cs_adaptsegnet.py']
source_dataset_type = 'SynthiaDataset'
source_data_root = 'data/synthia'
source_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='Resize', scale=(1280, 760), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    dataset=dict(
        source=dict(
            type=source_dataset_type,
            data_root=source_data_root,
            pipeline=source_train_pipeline)))
