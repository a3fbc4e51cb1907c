# Built-in demo, CDGA (reconstructed, docs/cdga.md): source_only.py plus
# cross-domain grouping and group-level adversarial alignment. Demo-sized:
# K = 4 groups for the demo's six classes, narrower discriminators (ndf 16)
# and C (64), adversarial weight 0.003 (a few hundred iterations instead of
# 150k), and a 100-iteration source-only warm-up (configs/cdga/gta2cs.py
# uses 10k).
_base_ = ['./source_only.py']
warmup_iters = 100
model = dict(methods=[
    dict(
        type='CDGA',
        num_classes=19,
        num_groups=4,
        lambda_adv=0.003,
        discriminator=dict(type='FCDiscriminator', ndf=16),
        grouping=dict(type='CrossDomainGroupingNetwork', channels=64),
        consistency_loss=dict(
            type='SemanticConsistencyLoss', distance='l1', loss_weight=0.1),
        orthogonality_loss=dict(
            type='ClusterOrthogonalityLoss', loss_weight=0.1),
        class_balance=True)
])
optim_wrapper = dict(
    _delete_=True,
    constructor='UDAOptimWrapperConstructor',
    segmentor=dict(
        optimizer={{_base_.optim_wrapper.optimizer}},
        # C is a new module: lr x10 as in configs/cdga/gta2cs.py
        paramwise_cfg=dict(
            custom_keys={'methods.0.grouping': dict(lr_mult=10.0)})),
    discriminator=dict(
        optimizer=dict(type='Adam', lr=1e-4, betas=(0.9, 0.99))))
custom_hooks = [
    dict(type='UDADebugVisualizationHook', interval={{_base_.max_iters}}),
    dict(
        type='LossWeightScheduleHook',
        schedules={'cdga.*': dict(type='step', begin=warmup_iters)}),
]
