# Built-in demo, source only: the small DeepLab-V2 trained on the synthetic
# "GTA" domain and evaluated on the textured "Cityscapes" domain
# (python tools/make_demo_data.py data/demo, then the converters). Every
# other configs/demo/*.py inherits this file and only adds its method, so the
# model, data, schedule and seed are the same for all of them.
_base_ = [
    '../_base_/models/demo_r18_dlv2.py',
    '../_base_/datasets/demo_gta2cs.py',
    '../_base_/default_runtime.py',
]
model = dict(
    _delete_=True,
    type='UDASegmentor',
    segmentor={{_base_.model}},
    methods=[])
# AdamW suits training from scratch within a short CPU budget.
optim_wrapper = dict(
    constructor='UDAOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4))
max_iters = 400
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=max_iters,
         by_epoch=False)
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False,
                    interval=max_iters),
    sampler_seed=dict(type='DistSamplerSeedHook'))
custom_hooks = [dict(type='UDADebugVisualizationHook', interval=max_iters)]
