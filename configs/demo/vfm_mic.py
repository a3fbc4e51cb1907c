# Built-in demo, VFM-UDA recipe (Englert et al., CVPRW 2024) on the tiny ViT
# of vfm_source_only.py: DACS self-training with the EMA teacher's
# flip-averaged pseudo-labels (0.968 confidence weight), ClassMix onto the
# weakly jittered target, VFM-UDA's colour/blur augmentation of the mixed
# image, and MIC-style masked consistency with 70 % of the student's ViT
# tokens replaced by its mask token (tue-mps/vfm-uda@e154d8f
# training/uda_vit/uda_vit_generic.py). Demo-sized as daformer.py: EMA
# momentum 0.99 for a few hundred iterations; no pseudo-label margins.
_base_ = ['./vfm_source_only.py']
model = dict(
    teacher_mode='dropout_off',
    methods=[
        dict(
            type='SelfTraining',
            pseudo_threshold=0.968,
            pseudo_weight_ignore_top=0,
            pseudo_weight_ignore_bottom=0,
            imnet_feature_dist_lambda=0.0,
            pseudo_label_flip=True,
            strong_augmentation='vfm_uda',
            class_mix_target_jitter='vfm_uda'),
        dict(
            type='MaskedImageConsistency',
            mask_mode='separatetrgaug',
            mask_generator=dict(type='token', mask_ratio=0.7),
            augmentation='vfm_uda',
            mask_lambda=1.0),
    ])
custom_hooks = [
    dict(type='EMATeacherHook', alpha=0.99),
    dict(type='UDADebugVisualizationHook', interval={{_base_.max_iters}}),
]
