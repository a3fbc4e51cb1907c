# SYNTHIA -> Cityscapes, PLCA data recipe (docs/plca.md;
# kgl-prml/Pixel-Level-Cycle-Association @ e01d77a0
# experiments/config/s2c_train.yaml,
# tools/train.py::get_transform): gta2cs_plca_730x730.py (random shorter
# side U{760..988}, flip, random 730x730 crop, 2 + 2 images per GPU; val at
# 730x1460 against full-resolution labels) with SYNTHIA-RAND-CITYSCAPES as
# the source and the 16-class label space of the official config
# (DATASET.NUM_CLASSES: 16): SYNTHIA, Cityscapes-train and Cityscapes-val all
# use the 16 classes below, in trainId order; mmseg's label_map sends
# terrain, truck and train to 255 (ignore), as PLCA's label_map.py does. The
# metric's 16 classes are then exactly mIoU16 (mIoU), and mIoU13 drops wall,
# fence and pole.
_base_ = ['./gta2cs_plca_730x730.py']
source_dataset_type = 'SynthiaDataset'
source_data_root = 'data/synthia'
# Cityscapes trainIds minus terrain (9), truck (14), train (16)
synthia_16_classes = ('road', 'sidewalk', 'building', 'wall', 'fence', 'pole',
                      'traffic light', 'traffic sign', 'vegetation', 'sky',
                      'person', 'rider', 'car', 'bus', 'motorcycle',
                      'bicycle')
metainfo = dict(classes=synthia_16_classes)

train_dataloader = dict(
    dataset=dict(
        source=dict(
            type=source_dataset_type,
            data_root=source_data_root,
            metainfo=metainfo),  # LoadAnnotations applies the 19 -> 16 map
        target=dict(metainfo=metainfo)))
val_dataloader = dict(dataset=dict(metainfo=metainfo))
test_dataloader = val_dataloader
