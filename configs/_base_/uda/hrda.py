# HRDA (Hoyer et al., ECCV 2022) self-training: DAFormer's DACS
# (SelfTraining) on the HRDA network (models/hrda_daformer_mitb5.py), with
# pseudo-label margins as a data-pipeline mask instead of ignored rows and
# rare-class sampling at min_crop_ratio 2.0; AdamW warm-up + poly, 40k
# iterations. Shared by configs/hrda/{gta2cs,synthia2cs}.py, which add the
# data. Every value follows lhoyer/HRDA@c370b5b configs/hrda/gtaHR2csHR_hrda.py
# and its _base_ files (uda/dacs_a999_fdthings.py, uda/dacs.py,
# schedules/adamw.py, schedules/poly10warm.py); experiments.py id 40.
_base_ = [
    '../models/hrda_daformer_mitb5.py',
    # AdamW 6e-5 (head x10, no decay on norms), linear warm-up 1.5k then
    # poly 1.0, 40k iterations, val every 4k (adamw.py, poly10warm.py and the
    # optimizer block of gtaHR2csHR_hrda.py: identical to DAFormer's)
    '../schedules/adamw_poly10warm_40k.py',
    # SelfTraining settings of DACS/DAFormer (dacs.py, dacs_a999_fdthings.py)
    './dacs_self_training.py',
]

model = dict(
    _delete_=True,
    type='UDASegmentor',
    segmentor={{_base_.model}},
    # DACS pseudo-labels: teacher in train mode with Dropout/DropPath off;
    # its BN layers see the context batch and the 9*B detail crops as two
    # batches, as in HRDA's encode_decode.
    teacher_mode='dropout_off',
    methods=[
        dict(
            # DACS as DAFormer configures it (dacs_self_training.py:
            # threshold 0.968, batch-wide quality weight, ClassMix over the
            # source batch at the full 1024 input resolution, colour jitter
            # s 0.2 p 0.2 + blur, thing-class FD 0.005 / scale ratio 0.75)
            _base_.dacs_self_training,
            # gtaHR2csHR_hrda.py "Pseudo-Label Cropping v2": the margins are
            # the target pipeline's GenerateValidPseudoMask
            # (hrda_target_train_pipeline below); the row ignores are 0
            # (HRDA asserts it when crop_pseudo_margins is set)
            pseudo_weight_ignore_top=0,
            pseudo_weight_ignore_bottom=0,
            # HRDA compares the context features (feature_scale=0.5), so the
            # frozen encoder sees the source downscaled x0.5
            # (HRDAEncoderDecoder.uda_feature_input)
            imnet_feature_dist_encoder=_base_.model.backbone),
    ])

# gtaHR2csHR_hrda.py: rare_class_sampling=dict(min_pixels=3000,
# class_temp=0.01, min_crop_ratio=2.0) ("twice the input resolution, 4 times
# more pixels" than DAFormer's 0.5); the leaf configs put it in place of the
# dataset base's rare_class_sampling=None.
hrda_rare_class_sampling = dict(
    _delete_=True, min_pixels=3000, class_temp=0.01, min_crop_ratio=2.0)

# Cityscapes target pipeline with HRDA's pseudo-label margins
# (crop_pseudo_margins=[30, 240, 30, 30] = top, bottom, left, right, at the
# 2048x1024 image, before resize/crop/flip: CityscapesDataset.pre_pipeline).
hrda_target_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='GenerateValidPseudoMask', margins=(30, 240, 30, 30),
         size=(1024, 2048)),  # HRDA's valid_mask_size (Cityscapes)
    dict(type='Resize', scale=(2048, 1024), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(1024, 1024)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputsWithValidMask'),
]

custom_hooks = [
    # uda/dacs_a999_fdthings.py alpha=0.999 with the 1 - 1/(t+1) ramp
    dict(type='EMATeacherHook', alpha=0.999),
    # uda/dacs.py debug_img_interval=1000
    dict(type='UDADebugVisualizationHook', interval=1000),
]
