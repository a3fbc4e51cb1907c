# DAFormer (Hoyer et al., CVPR 2022): MiT-B5 + DAFormer head, DACS
# self-training with EMA teacher alpha 0.999, thing-class ImageNet feature
# distance and pseudo-label crop, AdamW warm-up + poly, 40k iterations; shared
# by configs/daformer/{gta2cs,synthia2cs}.py, which add the data (and switch
# rare-class sampling on with `daformer_rare_class_sampling`). Every value
# follows lhoyer/DAFormer
# configs/daformer/gta2cs_uda_warm_fdthings_rcs_croppl_a999_daformer_mitb5_s0.py
# (+ its _base_ files, experiments.py id 6/7; commit e6f6e04), see
# docs/self_training.md. Seed 0 (the
# _s0 config) comes from default_runtime.py.
_base_ = [
    # MiT-B5 encoder (ImageNet weights: pretrained/mit_b5.pth, see the file)
    # + DAFormer decoder (sep. ASPP fusion); daformer_sepaspp_mitb5.py
    '../models/daformer_mitb5.py',
    # AdamW 6e-5 (head x10, no decay on norms), linear warm-up 1.5k then
    # poly 1.0, 40k iterations, val every 4k (adamw.py, poly10warm.py)
    '../schedules/adamw_poly10warm_40k.py',
]

model = dict(
    _delete_=True,
    type='UDASegmentor',
    segmentor={{_base_.model}},
    # Teacher in train mode with Dropout/DropPath off (dacs.py, pseudo-label
    # generation); only the source batch goes through the student's own
    # forward (the target only through the teacher and, mixed, the student).
    teacher_mode='dropout_off',
    methods=[
        dict(
            type='SelfTraining',
            # dacs.py pseudo_threshold
            pseudo_threshold=0.968,
            # dacs.py::forward_train: one confident fraction for the batch
            pseudo_weight_scope='batch',
            # "Pseudo-Label Crop": pseudo_weight_ignore_top/bottom
            pseudo_weight_ignore_top=15,
            pseudo_weight_ignore_bottom=120,
            # get_class_masks: candidates = classes of the whole source batch
            class_mix_candidates='batch',
            # dacs.py color_jitter_strength / color_jitter_probability, blur
            color_jitter_strength=0.2,
            color_jitter_probability=0.2,
            blur=True,
            # "Thing-Class Feature Distance": imnet_feature_dist_lambda,
            # imnet_feature_dist_classes, imnet_feature_dist_scale_min_ratio
            imnet_feature_dist_lambda=0.005,
            imnet_feature_dist_classes=[6, 7, 11, 12, 13, 14, 15, 16, 17, 18],
            imnet_feature_dist_scale_min_ratio=0.75,
            # the frozen ImageNet encoder: same architecture as the student's
            # backbone, copied from the (ImageNet-initialised) student at the
            # first iteration (DAFormer builds it from the same pretrained
            # checkpoint)
            imnet_feature_dist_encoder={{_base_.model.backbone}},
            imnet_feature_dist_init='student'),
    ])

# "Rare Class Sampling" (experiments.py setup_rcs); the leaf configs put it
# in place of the dataset base's rare_class_sampling=None.
daformer_rare_class_sampling = dict(
    _delete_=True, min_pixels=3000, class_temp=0.01, min_crop_ratio=0.5)

custom_hooks = [
    # "Increased Alpha": EMA teacher alpha=0.999 with the 1 - 1/(t+1) ramp
    dict(type='EMATeacherHook', alpha=0.999),
    # DAFormer debug_img_interval=1000 (class_mix_debug figures)
    dict(type='UDADebugVisualizationHook', interval=1000),
]
