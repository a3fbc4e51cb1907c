# VFM-UDA (Englert et al., "Exploring the Benefits of Vision Foundation
# Models for Unsupervised Domain Adaptation", CVPRW 2024): DACS
# self-training with an EMA teacher and MIC-style masked consistency on a
# DINOv2 ViT (models/dinov2_vitl_vfmuda.py), AdamW with the encoder at x0.1,
# linear warm-up and decay, 40k iterations. Shared by
# configs/vfm/*_mic.py, which add the data. Every value follows
# tue-mps/vfm-uda@e154d8f uda_vit_vanilla.yaml and
# training/uda_vit/uda_vit_generic.py (UDAVITGeneric); docs/vfm.md maps
# each one.
_base_ = [
    '../models/dinov2_vitl_vfmuda.py',
    '../schedules/vfmuda_adamw_40k.py',
    # DACS settings shared with DAFormer (threshold 0.968, batch-wide
    # confident fraction, ClassMix over the source batch's classes)
    './dacs_self_training.py',
]

model = dict(
    _delete_=True,
    type='UDASegmentor',
    segmentor={{_base_.model}},
    # get_pseudo_label_and_weight: the EMA network in train mode with
    # Dropout/DropPath off
    teacher_mode='dropout_off',
    # random_aug_weak on the source image before its supervised forward
    # (train_dataprep: ColorJitter(32/255, 0.5, 0.5, 18/360) with p 0.9)
    source_color_jitter='vfm_uda',
    methods=[
        dict(
            _base_.dacs_self_training,
            # the flip-averaged softmax of the EMA network
            pseudo_label_flip=True,
            # get_mixed_source_and_target: ClassMix onto the weakly
            # jittered target (random_aug_weak), then random_aug_uda on the
            # mixed image (jitter s 0.2 with p 0.8, blur p 0.5)
            class_mix_target_jitter='vfm_uda',
            strong_augmentation='vfm_uda',
            # margins are the target pipeline's GenerateValidPseudoMask
            # (UDATransform's ignore_mask), not ignored rows
            pseudo_weight_ignore_top=0,
            pseudo_weight_ignore_bottom=0,
            # no ImageNet feature distance in VFM-UDA
            imnet_feature_dist_lambda=0.0),
        dict(
            type='MaskedImageConsistency',
            # training_step: the student on random_aug_uda(target) with
            # token_mask_ratio 0.7 of its ViT tokens replaced by the mask
            # token, CE against the pseudo-labels with their weight
            mask_mode='separatetrgaug',
            mask_generator=dict(type='token', mask_ratio=0.7),
            augmentation='vfm_uda',
            mask_lambda=1.0,
            mask_alpha='same',
            mask_pseudo_threshold='same'),
    ])

# RareClassSamplerDataset defaults (rcs_class_temp 0.05, min pixels 3000,
# min_crop_ratio = 1024^2 / (512 x 1024) = 2.0)
vfm_uda_rare_class_sampling = dict(
    _delete_=True, min_pixels=3000, class_temp=0.05, min_crop_ratio=2.0)

custom_hooks = [
    # ema_alpha 0.999 with alpha = min(1 - 1/(t+1), 0.999), over parameters
    # and buffers (training_step; DINOv2 + ViTUpsampleHead have no buffers,
    # so ema_buffers only matters for other networks)
    dict(type='EMATeacherHook', alpha=0.999, ema_buffers=True),
    # _log_train every 100 steps
    dict(type='UDADebugVisualizationHook', interval=1000),
]
