# Segmentation optimizer and schedule of AdaptSegNet/ADVENT (wasidennis/
# AdaptSegNet @ fca9ff0f, train_gta2cityscapes_multi.py): SGD lr 2.5e-4,
# momentum 0.9, weight decay 5e-4, classifier lr x10, poly power 0.9 over
# NUM_STEPS=250k, training stopped at NUM_STEPS_STOP=150k.
optim_wrapper = dict(
    constructor='UDAOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=2.5e-4, momentum=0.9, weight_decay=5e-4),
    # AdaptSegNet's get_10x_lr_params: the classifier (decode head)
    paramwise_cfg=dict(custom_keys={'decode_head': dict(lr_mult=10.0)}))
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=0.9,
        begin=0,
        end=250000,
        by_epoch=False)
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=150000, val_interval=5000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=5000,
        max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
custom_hooks = [dict(type='UDADebugVisualizationHook', interval=5000)]
