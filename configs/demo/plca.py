# Built-in demo, PLCA (docs/plca.md): source_only.py plus feature- and
# classifier-level cycle association with target spatial aggregation, the LSR
# regulariser and Lovász-Softmax on the source, the released weights
# (configs/_base_/uda/plca.py). Source and target go through BatchNorm
# separately as in the official code; test-time aggregation is on.
# Demo-sized: the demo network starts from random weights (PLCA starts from
# ImageNet features), so the association losses ramp in linearly over
# iterations 100-200, once the features separate the classes.
_base_ = ['./source_only.py']
model = dict(
    bn_mode='separate',
    methods=[
        dict(
            type='PLCA',
            feat_association=dict(
                type='CycleAssociationLoss', metric='cos', alpha=0.5,
                chunk_size=1024, loss_name='loss_ass_feat'),
            cls_association=dict(
                type='CycleAssociationLoss', metric='kl', alpha=0.5,
                chunk_size=1024, loss_name='loss_ass_cls'),
            lambda_feat=0.1,
            lambda_cls=0.1,
            lsr=dict(type='UniformCrossEntropyRegularizer', threshold=10.0),
            lambda_lsr=0.01,
            lovasz=dict(
                type='DistributedLovaszSoftmaxLoss', classes='present'),
            lovasz_weight=3.0,
            test_aggregation=True)
    ])
custom_hooks = [
    dict(type='UDADebugVisualizationHook', interval={{_base_.max_iters}}),
    dict(
        type='LossWeightScheduleHook',
        schedules={'plca.loss_ass_*': dict(type='linear', begin=100,
                                           end=200)}),
]
