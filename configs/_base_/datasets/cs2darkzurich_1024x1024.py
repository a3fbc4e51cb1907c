# Cityscapes -> Dark Zurich (night) at HRDA's resolution: lhoyer/MIC @
# 2f932a9,
# seg/configs/_base_/datasets/uda_cityscapesHR_to_darkzurichHR_1024x1024.py
# (the same file as lhoyer/HRDA's). Source: Cityscapes train as in
# cs2acdc_1024x1024.py. Target: Dark Zurich rgb_anon/train/night (no labels
# exist) at 1920x1080, random 1024x1024 crops, flip 0.5. Evaluation: Dark
# Zurich val (night, 50 labelled images) at 1920x1080 with mmseg's
# DarkZurichDataset; the paper reports the test split through the server
# (val and test differ a lot, MIC README).
_base_ = ['./cs2acdc_1024x1024.py']
test_pipeline = {{_base_.test_pipeline}}
train_dataloader = dict(
    dataset=dict(
        target=dict(
            _delete_=True,
            type='DarkZurichDataset',
            data_root='data/dark_zurich',
            data_prefix=dict(img_path='rgb_anon/train/night'),
            pipeline={{_base_.target_train_pipeline}})))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='DarkZurichDataset',
        data_root='data/dark_zurich',
        data_prefix=dict(
            img_path='rgb_anon/val/night', seg_map_path='gt/val/night'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
