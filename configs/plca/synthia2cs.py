# PLCA (Kang et al., NeurIPS 2020), SYNTHIA -> Cityscapes, DeepLab-V2 R101
# (Caffe, ImageNet init). Code-exact recipe of
# kgl-prml/Pixel-Level-Cycle-Association @ e01d77a0 (experiments/config/
# s2c_train.yaml, s2c_test.yaml, tools/test.py); see docs/plca.md. Released
# checkpoint: 46.9 mIoU16 (paper 46.8 / 54.1 mIoU13).
#
# 16-class head, as the official config (DATASET.NUM_CLASSES: 16): the
# classifier-level association (-KL between class distributions) and the
# LSR term (mean log-probability over the K classes, pulled towards 10)
# depend on K, and a 19-way head would keep three never-supervised classes
# whose very low log-probabilities the LSR term would push back up. The
# datasets map terrain/truck/train to 255 (synthia2cs_plca_730x730.py), so
# the metric's mIoU is mIoU16 and its mIoU13 key the 13-class mean.
_base_ = [
    '../_base_/uda/plca.py',
    '../_base_/datasets/synthia2cs_plca_730x730.py',
    '../_base_/default_runtime.py',
]
model = dict(segmentor=dict(decode_head=dict(num_classes=16)))

# 8 + 8 images per optimizer step, see gta2cs.py.
num_gpus = 2
samples_per_gpu = 2  # train_dataloader.batch_size
accumulative_counts = 8 // (num_gpus * samples_per_gpu)
steps_per_epoch = 372  # ceil(2975 / 8): epochs count target images
poly_epochs = 10  # POLY.MAX_EPOCHS
train_epochs = 8  # TRAIN.MAX_EPOCHS: 2,976 steps
optim_wrapper = dict(accumulative_counts=accumulative_counts)
param_scheduler = [
    # lr = 2.5e-4 * (1 - step / 3,720)^0.9
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=0.9,
        begin=0,
        end=poly_epochs * steps_per_epoch * accumulative_counts,
        by_epoch=False)
]
train_cfg = dict(
    type='IterBasedTrainLoop',
    max_iters=train_epochs * steps_per_epoch * accumulative_counts,
    val_interval=steps_per_epoch * accumulative_counts)  # TEST_INTERVAL 1.0
default_hooks = dict(
    checkpoint=dict(
        type='CheckpointHook',
        by_epoch=False,
        interval=5 * steps_per_epoch * accumulative_counts,  # 5 epochs
        max_keep_ckpts=3))
custom_hooks = [
    dict(
        type='UDADebugVisualizationHook',
        interval=steps_per_epoch * accumulative_counts)
]
