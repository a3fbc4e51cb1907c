# VFM-UDA optimisation (tue-mps/vfm-uda@e154d8f
# training/uda_vit/uda_vit_generic.py::configure_optimizers and
# models/warmup_and_linear_scheduler.py; uda_vit_vanilla.yaml): AdamW,
# weight decay 0.01 on every parameter, base lr 5e-5 x sqrt(global batch 8)
# for the head, x0.1 (lr_multiplier) for the whole encoder (blocks, patch
# and position embeddings, mask token, final norm; layerwise_lr_decay 1.0 =
# none), 40k iterations.
#
# WarmupAndLinearScheduler(start_warmup_lr=1e-3, warmup_iters=1500,
# base_lr=1, final_lr=0, total_iters=40000) multiplies each group's lr by
#   linspace(1e-3, 1, 1500)[t]                 for t < 1500,
#   linspace(1, 0, 40001)[t] = 1 - t / 40000   for t >= 1500
# (a step from 1 to 0.9625 at t = 1500). mmengine's LinearLR gives the
# first with end=1500 (its ramp spans end - begin - 1 = 1499 steps) and the
# second with start_factor 0.9625 from 1500 to 40001.
# tests/test_vfm_configs.py checks it against the official formula.
_base_ = ['./adamw_poly10warm_40k.py']
vfm_uda_lr = 5e-05 * 8**0.5  # lr * sqrt(batch_size * devices * nodes)
optim_wrapper = dict(
    _delete_=True,
    constructor='UDAOptimWrapperConstructor',
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=vfm_uda_lr, betas=(0.9, 0.999), eps=1e-08,
        weight_decay=0.01),
    paramwise_cfg=dict(
        # lr_multiplier 0.1 for every encoder parameter (the backbone)
        custom_keys=dict(backbone=dict(lr_mult=0.1))))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, end_factor=1.0, begin=0,
         end=1500, by_epoch=False),
    dict(type='LinearLR', start_factor=1.0 - 1500 / 40000, end_factor=0.0,
         begin=1500, end=40001, by_epoch=False),
]
# max_steps 40000, val_check_interval 1000. The official runs use
# `precision: 16-mixed` (main.py): train with --amp (float16 + loss scaler)
# or --amp-dtype bfloat16 on a GPU. Loops and hooks (logging every 50,
# checkpoints every 4k with --resume) as adamw_poly10warm_40k.py.
train_cfg = dict(val_interval=1000)
