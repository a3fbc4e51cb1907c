# Built-in demo, DACS/DAFormer self-training (docs/self_training.md):
# source_only.py plus the EMA teacher, pseudo-labels with the 0.968
# confidence weight, ClassMix, colour jitter and blur. Demo-sized: the
# teacher's EMA momentum is 0.99 (DACS) instead of 0.999 for a few hundred
# iterations; no ImageNet feature distance (the demo model has no ImageNet
# weights); no pseudo-label crop rows (128-pixel demo crops).
_base_ = ['./source_only.py']
model = dict(
    teacher_mode='dropout_off',
    methods=[
        dict(
            type='SelfTraining',
            pseudo_threshold=0.968,
            pseudo_weight_ignore_top=0,
            pseudo_weight_ignore_bottom=0,
            imnet_feature_dist_lambda=0.0)
    ])
custom_hooks = [
    dict(type='EMATeacherHook', alpha=0.99),
    dict(type='UDADebugVisualizationHook', interval={{_base_.max_iters}}),
]
