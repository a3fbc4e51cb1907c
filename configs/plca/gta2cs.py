# PLCA (Kang et al., NeurIPS 2020), GTA5 -> Cityscapes, DeepLab-V2 R101
# (Caffe, ImageNet init; weights: ../_base_/models/deeplabv2_r101_caffe.py).
# Code-exact recipe of kgl-prml/Pixel-Level-Cycle-Association @ e01d77a0
# (experiments/config/g2c_train.yaml, g2c_test.yaml, tools/test.py);
# see docs/plca.md. Released checkpoint: 47.8 mIoU (paper 47.7).
_base_ = [
    # UDASegmentor + PLCA + SGD, bn_mode='separate'
    '../_base_/uda/plca.py',
    # 730x730 crops after a random shorter side in [760, 988], flip; val at
    # 730x1460 whole image with test-time aggregation
    '../_base_/datasets/gta2cs_plca_730x730.py',
    '../_base_/default_runtime.py',
]

# 8 source + 8 target images per optimizer step = samples_per_gpu x num_gpus
# x accumulative_counts (TRAIN_BATCH_SIZE 4 = 2 per GPU on the released 2
# GPUs, ITER_SIZE 2). On another number of GPUs keep the product at 8
# (1 GPU: accumulative_counts 4; 4 GPUs: 1).
num_gpus = 2
samples_per_gpu = 2  # train_dataloader.batch_size
accumulative_counts = 8 // (num_gpus * samples_per_gpu)
# An epoch is ceil(len(target loader) / ITER_SIZE) = ceil(2975 / 8) = 372
# optimizer steps (Solver.compute_iters_per_epoch).
steps_per_epoch = 372
poly_epochs = 30  # POLY.MAX_EPOCHS: the lr reaches 0 after 30 epochs
train_epochs = 28  # TRAIN.MAX_EPOCHS: training stops after 10,416 steps
# mmengine counts iterations in micro-batches (train_step calls), and the
# scheduler steps every iteration: scale the step counts by
# accumulative_counts.
optim_wrapper = dict(accumulative_counts=accumulative_counts)
param_scheduler = [
    # lr = 2.5e-4 * (1 - step / 11,160)^0.9
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
    # Solver.test after every epoch (TEST_INTERVAL 1.0)
    val_interval=steps_per_epoch * accumulative_counts)
default_hooks = dict(
    # SAVE_CKPT_INTERVAL 5.0 epochs
    checkpoint=dict(
        type='CheckpointHook',
        by_epoch=False,
        interval=5 * steps_per_epoch * accumulative_counts,
        max_keep_ckpts=3))
custom_hooks = [
    dict(
        type='UDADebugVisualizationHook',
        interval=steps_per_epoch * accumulative_counts)
]
