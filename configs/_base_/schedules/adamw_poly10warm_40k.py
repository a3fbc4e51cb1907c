# DAFormer optimisation (Hoyer et al., CVPR 2022): lhoyer/DAFormer
# configs/_base_/schedules/adamw.py + poly10warm.py, the optimizer block of
# configs/daformer/gta2cs_uda_warm_fdthings_rcs_croppl_a999_daformer_mitb5_s0.py
# and experiments.py (pmult=True, MiT custom keys), 40k iterations.
optim_wrapper = dict(
    constructor='UDAOptimWrapperConstructor',
    type='OptimWrapper',
    # adamw.py: AdamW lr 6e-5, betas (0.9, 0.999), weight decay 0.01; no
    # gradient clipping (optimizer_config=None).
    optimizer=dict(
        type='AdamW', lr=6e-05, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys=dict(
            # decode head lr x10 (matches student.decode_head.*; the first
            # matching key wins and keys of equal length go alphabetically,
            # so head parameters keep weight decay, as in mmcv 1.x). It also
            # matches a method's new heads (T2S's methods.1.projection_head),
            # which are trained from scratch like the decode head.
            head=dict(lr_mult=10.0),
            # no weight decay on positional blocks (none in MiT; kept from
            # DAFormer's config) and on LayerNorms named *norm*
            pos_block=dict(decay_mult=0.0),
            norm=dict(decay_mult=0.0)),
        # DAFormer's MiT names its stage-final LayerNorms norm1..norm4 (no
        # decay via the 'norm' key); mmseg 1.x names them layers.<i>.2, so
        # the same no-decay is given to every norm layer that no custom key
        # matched. Parity: test_daformer_schedule.py.
        norm_decay_mult=0.0))
# poly10warm.py: mmcv 1.x 'poly' policy with linear warm-up, i.e.
#   lr(t) = base * (1 - t/T)^p * (r + (1 - r) * t/W)  for t < W,
#   lr(t) = base * (1 - t/T)^p                          for t >= W,
# with W=1500 (warmup_iters), r=1e-6 (warmup_ratio), p=1.0, T=40000,
# min_lr=0. mmengine's chained LinearLR x PolyLR give exactly this when both
# begin at 0: their `end` is one past the last iteration of the ramp
# (mmengine uses total_iters = end - begin - 1), hence 1501 and 40001.
# Checked at iterations 0, 1, 749, 1499, 1500, 20000, 39999 by
# tests/test_daformer_schedule.py.
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-6,
        end_factor=1.0,
        begin=0,
        end=1501,
        by_epoch=False),
    dict(
        type='PolyLR',
        power=1.0,
        eta_min=0.0,
        begin=0,
        end=40001,
        by_epoch=False),
]
# 40k iterations, evaluation every 4k (DAFormer evaluation interval=4000).
train_cfg = dict(type='IterBasedTrainLoop', max_iters=40000, val_interval=4000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # DAFormer saves only the final model (interval 40000, max_keep 1);
    # saving every 4k makes --resume possible (lhoyer/DAFormer#80). A
    # checkpoint holds student, teacher, frozen ImageNet encoder and AdamW state.
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=4000,
        max_keep_ckpts=1, save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
