# SYNTHIA -> Cityscapes, PLCA data recipe (methods.md §2.5;
# kgl-prml/Pixel-Level-Cycle-Association experiments/config/s2c_train.yaml,
# tools/train.py::get_transform): as gta2cs_plca_730x730.py (random shorter
# side U{760..988}, flip, random 730x730 crop; val at 730x1460) with the
# 16-class label space of the official config (DATASET.NUM_CLASSES: 16):
# SYNTHIA, Cityscapes-train and Cityscapes-val all use the 16 classes below,
# in trainId order; mmseg's label_map sends terrain, truck and train to 255
# (ignore), as PLCA's label_map.py does. The metric's 16 classes are then
# exactly mIoU16 (mIoU), and mIoU13 drops wall, fence and pole.
source_dataset_type = 'SynthiaDataset'
source_data_root = 'data/synthia'
dataset_type = 'CityscapesDataset'
data_root = 'data/cityscapes'
crop_size = (730, 730)  # CROPSIZE
short_side_scales = list(range(760, 989))  # LOADSIZE 760 x [1.0, 1.3]
# Cityscapes trainIds minus terrain (9), truck (14), train (16)
synthia_16_classes = ('road', 'sidewalk', 'building', 'wall', 'fence', 'pole',
                      'traffic light', 'traffic sign', 'vegetation', 'sky',
                      'person', 'rider', 'car', 'bus', 'motorcycle',
                      'bicycle')
metainfo = dict(classes=synthia_16_classes)

source_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),  # applies the 19 -> 16 label_map
    dict(
        type='RandomChoiceResize',
        scales=short_side_scales,
        resize_type='ResizeShortestEdge',
        max_size=100000),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=1.0),
    dict(type='Pad', size=crop_size, pad_val=dict(img=0, seg=255)),
    dict(type='PackSegInputs'),
]
# The target pipeline never loads labels (UDADataset refuses it).
target_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomChoiceResize',
        scales=short_side_scales,
        resize_type='ResizeShortestEdge',
        max_size=100000),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=1.0),
    dict(type='Pad', size=crop_size, pad_val=dict(img=0, seg=255)),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1460, 730), keep_ratio=True),  # INPUT_SIZE_T
    dict(type='LoadAnnotations'),  # full resolution, 16-class label_map
    dict(type='PackSegInputs'),
]

train_dataloader = dict(
    batch_size=2,  # TRAIN_BATCH_SIZE 4 over 2 GPUs
    num_workers=2,  # NUM_WORKERS
    persistent_workers=True,
    sampler=dict(type='UDAPairSampler', shuffle=True),
    dataset=dict(
        type='UDADataset',
        source=dict(
            type=source_dataset_type,
            data_root=source_data_root,
            metainfo=metainfo,
            pipeline=source_train_pipeline),
        target=dict(
            type=dataset_type,
            data_root=data_root,
            data_prefix=dict(img_path='leftImg8bit/train'),
            metainfo=metainfo,
            pipeline=target_train_pipeline),
        rare_class_sampling=None))
val_dataloader = dict(
    # the batch size does not change the result (TEST.BATCH_SIZE 2 there)
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
        metainfo=metainfo,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
# 16 dataset classes: mIoU = mIoU16; class_subsets adds mIoU13.
val_evaluator = dict(type='UDAIoUMetric')
test_evaluator = val_evaluator
