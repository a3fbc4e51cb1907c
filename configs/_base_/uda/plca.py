# PLCA (Kang et al., NeurIPS 2020) around the DeepLab-V2 student, with the
# released optimiser (kgl-prml/Pixel-Level-Cycle-Association at e01d77a;
# docs/plca.md; experiments/config/{g2c,s2c}_train.yaml,
# config/config.py, solver/solver.py). The dataset and the iteration counts
# are set by configs/plca/{gta2cs,synthia2cs}.py.
_base_ = ['../models/deeplabv2_r101_caffe_plca.py']

model = dict(
    _delete_=True,
    type='UDASegmentor',
    segmentor={{_base_.model}},
    # Solver.association forwards the target batch, then the source batch:
    # BatchNorm statistics per domain (docs/plca.md).
    bn_mode='separate',
    methods=[
        dict(
            type='PLCA',
            # feature level: cosine on the decode head's input (layer4,
            # 2048 ch, stride 8), target aggregation alpha = SPAGG_ALPHA 0.5
            feat_association=dict(
                type='CycleAssociationLoss',
                metric='cos',
                alpha=0.5,
                # memory-bounded blocks of 1024 rows; None = full N x N
                # matrices as the official code (same values/gradients)
                chunk_size=1024,
                # MAX_PIXELS-style start-pixel subsampling: off
                max_pixels=None,
                # mean over the valid pixels of all GPUs (the official code
                # averages per GPU; equal on one GPU)
                reduction='global_mean',
                loss_name='loss_ass_feat'),
            # classifier level: -KL on softmax(stride-8 logits)
            cls_association=dict(
                type='CycleAssociationLoss',
                metric='kl',
                alpha=0.5,
                chunk_size=1024,
                max_pixels=None,
                reduction='global_mean',
                loss_name='loss_ass_cls'),
            lambda_feat=0.1,  # TRAIN.ASSO_W
            lambda_cls=0.1,  # TRAIN.ASSO_W (APPLY_MULTILAYER_ASSOCIATION)
            # LSR on source and target stride-8 logits, LSR_THRES 10
            lsr=dict(type='UniformCrossEntropyRegularizer', threshold=10.0),
            lambda_lsr=0.01,  # TRAIN.LSR_W
            # Lovász-Softmax of the source, classes='present', global sort
            # over all GPUs (lov_softmax_multigpu.py)
            lovasz=dict(
                type='DistributedLovaszSoftmaxLoss', classes='present'),
            # LOV_W 0.75 x world_size 2 x ITER_SIZE 2 (solver.py adds
            # LOV_W * get_world_size() * iter_size * lovasz); see docs/plca.md
            lovasz_weight=3.0,
            # TRAIN.USE_DOWNSAMPLING False (SCALE_FACTOR 1.0)
            downsample_factor=1.0,
            # tools/test.py TEST.WITH_AGGREGATION True, alpha 0.5
            test_aggregation=True,
            test_alpha=0.5,
            test_chunk_size=1024)
    ])

# SGD on all parameters (BN included), lr 2.5e-4, momentum 0.9, weight decay
# 5e-4 (BASE_LR, MOMENTUM, WEIGHT_DECAY); LR_MULT 1.0 in the released
# configs, so the classifier is NOT at 10x (config.py's default is 10).
# accumulative_counts is set with the schedule in configs/plca/*.py.
optim_wrapper = dict(
    constructor='UDAOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=2.5e-4, momentum=0.9, weight_decay=5e-4))
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
