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
    # SelfTraining settings of DACS/DAFormer (dacs.py, dacs_a999_fdthings.py)
    './dacs_self_training.py',
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
            # DACS as DAFormer configures it (dacs_self_training.py)
            _base_.dacs_self_training,
            # "Pseudo-Label Crop": pseudo_weight_ignore_top/bottom
            pseudo_weight_ignore_top=15,
            pseudo_weight_ignore_bottom=120,
            # the frozen ImageNet encoder for the thing-class feature
            # distance: the student's backbone architecture
            imnet_feature_dist_encoder=_base_.model.backbone),
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
