# DAFormer (Hoyer et al., CVPR 2022) SYNTHIA -> Cityscapes: the GTA5 recipe
# of gta2cs.py unchanged on SYNTHIA (lhoyer/DAFormer experiments.py id 7:
# the same dacs_a999_fdthings UDA, RCS T=0.01, pseudo-label crop, MiT-B5
# DAFormer, 40k iterations, batch 2); methods.md §4.2. 19-way head, the 3
# classes absent from SYNTHIA are never supervised; mIoU16/mIoU13 come from
# the per-class IoUs (dataset base's metric).
# Reference: 60.9 mIoU16 (DAFormer README; methods.md §1.6).
_base_ = [
    # MiT-B5 encoder (ImageNet weights: pretrained/mit_b5.pth, see the file)
    # + DAFormer decoder (sep. ASPP fusion); daformer_sepaspp_mitb5.py
    '../_base_/models/daformer_mitb5.py',
    # SYNTHIA 1280x760 / Cityscapes 1024x512, random 512x512 crops (source
    # cat_max_ratio 0.75), flip 0.5, batch 2 + 2; Cityscapes val whole
    # image at 1024x512 (uda_synthia_to_cityscapes_512x512.py)
    '../_base_/datasets/synthia2cs_512x512.py',
    # AdamW 6e-5 (head x10, no decay on norms), linear warm-up 1.5k then
    # poly 1.0, 40k iterations, val every 4k (adamw.py, poly10warm.py)
    '../_base_/schedules/adamw_poly10warm_40k.py',
    '../_base_/default_runtime.py',
]
randomness = dict(seed=0)  # seed = 0 (the _s0 config)

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

train_dataloader = dict(
    batch_size=2,  # samples_per_gpu=2 (2 source + 2 target), 1 GPU
    dataset=dict(
        # "Rare Class Sampling" (experiments.py setup_rcs); replaces the
        # dataset base's rare_class_sampling=None
        rare_class_sampling=dict(
            _delete_=True, min_pixels=3000, class_temp=0.01,
            min_crop_ratio=0.5)))

custom_hooks = [
    # "Increased Alpha": EMA teacher alpha=0.999 with the 1 - 1/(t+1) ramp
    dict(type='EMATeacherHook', alpha=0.999),
    # DAFormer debug_img_interval=1000 (class_mix_debug figures)
    dict(type='UDADebugVisualizationHook', interval=1000),
]
