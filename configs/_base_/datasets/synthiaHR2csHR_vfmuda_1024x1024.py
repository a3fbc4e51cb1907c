# SYNTHIA -> Cityscapes as the VFM-UDA code feeds it: gtaHR2csHR_vfmuda_1024x1024.py
# with SYNTHIA-RAND-CITYSCAPES as the source, resized to short side
# 1024 x U(0.9, 1.1) (tue-mps/vfm-uda-plusplus@effbb03
# datasets/uda_multitrain_multival_datamodule.py: synthia_train_transforms,
# img_size 1024, scale_synthia [0.9, 1.1]; tue-mps/vfm-uda has no SYNTHIA
# loader), random 1024x1024 crops with cat_max_ratio 0.75, flip 0.5.
# UDAIoUMetric reports mIoU16/mIoU13.
_base_ = ['./gtaHR2csHR_vfmuda_1024x1024.py']
source_dataset_type = 'SynthiaDataset'
source_data_root = 'data/synthia'
source_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(8192, 1024), ratio_range=(0.9, 1.1),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=(1024, 1024), cat_max_ratio=0.75),
    dict(type='Pad', size=(1024, 1024), pad_val=dict(img=0, seg=255)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    dataset=dict(
        source=dict(
            type=source_dataset_type,
            data_root=source_data_root,
            pipeline=source_train_pipeline)))
