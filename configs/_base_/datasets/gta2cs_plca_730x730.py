# GTA5 -> Cityscapes, PLCA data recipe (docs/plca.md;
# kgl-prml/Pixel-Level-Cycle-Association @ e01d77a0
# experiments/config/g2c_train.yaml,
# tools/train.py::get_transform): both domains get a random resize of the
# shorter side to U{760, ..., 988} (LOADSIZE 760 x [1.0, 1.3]), a horizontal
# flip (p = 0.5) and a random 730x730 crop (CROPSIZE; image padded with 0,
# label with 255 where smaller, which never happens at these sizes).
# Evaluation: Cityscapes val, whole image resized to 730x1460 (INPUT_SIZE_T,
# g2c_test.yaml) against full-resolution labels. Normalisation (BGR, mean
# only) is the model's data preprocessor
# (../models/deeplabv2_r101_caffe.py).
source_dataset_type = 'GTAVDataset'
source_data_root = 'data/gta'
dataset_type = 'CityscapesDataset'
data_root = 'data/cityscapes'
crop_size = (730, 730)  # CROPSIZE
# torchvision F.resize(img, size) sets the shorter side; size drawn by
# random.randint(760, 988) (data/transforms.py::RandomResize)
short_side_scales = list(range(760, 989))

source_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomChoiceResize',
        scales=short_side_scales,
        resize_type='ResizeShortestEdge',
        max_size=100000),  # no cap on the longer side
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=1.0),
    # pad_if_smaller: image 0, label 255 (ignore)
    dict(type='Pad', size=crop_size, pad_val=dict(img=0, seg=255)),
    dict(type='PackSegInputs'),
]
# Same augmentation for the target; the target pipeline never loads labels
# (UDADataset refuses it).
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
    # INPUT_SIZE_T [730, 1460] (H, W); 2048x1024 keeps its aspect ratio
    dict(type='Resize', scale=(1460, 730), keep_ratio=True),
    # Labels are loaded after Resize so they stay at full resolution.
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]

train_dataloader = dict(
    # 2 source + 2 target images per GPU (TRAIN_BATCH_SIZE 4 over 2 GPUs);
    # the method configs reach 8 + 8 per optimizer step with
    # optim_wrapper.accumulative_counts.
    batch_size=2,
    num_workers=2,  # NUM_WORKERS
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
        rare_class_sampling=None))  # PLCA samples uniformly
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
        pipeline=test_pipeline))
test_dataloader = val_dataloader
# One confusion matrix over the 500 val images (ConfusionMatrix with
# reduce_from_all_processes in PLCA's utils/utils.py).
val_evaluator = dict(type='UDAIoUMetric')
test_evaluator = val_evaluator
