# DACS on DeepLab-V2 R101, GTA5 -> Cityscapes, as DAFormer re-trains it for
# its architecture comparison (lhoyer/DAFormer experiments.py id 1:
# ('dlv2red', 'r101v1c') with uda='dacs'): the SelfTraining method of
# gta2cs.py with the plain DACS settings (configs/_base_/uda/dacs.py: EMA
# alpha 0.99, no feature distance, no pseudo-label crop, no rare-class
# sampling) and DAFormer's AdamW/poly10warm 40k schedule. Only the config
# differs from the MiT-B5 run: SelfTraining needs no architecture change.
# (The original DACS paper trains with SGD 2.5e-4 for 250k iterations,
# 52.1 mIoU (Tranheden et al., WACV 2021); this is DAFormer's re-training
# of it.)
_base_ = [
    # ResNetV1c-101 (open-mmlab ImageNet weights, see
    # configs/_base_/models/deeplabv2_r101.py) + DLV2Head with dilations
    # (6, 12) ('dlv2red')
    '../_base_/models/deeplabv2red_r101.py',
    # 512x512 crops, batch 2 + 2, val at 1024x512 (as gta2cs.py)
    '../_base_/datasets/gta2cs_512x512.py',
    # AdamW 6e-5, head x10, warm-up 1.5k + poly 1.0, 40k
    '../_base_/schedules/adamw_poly10warm_40k.py',
    '../_base_/default_runtime.py',
]


model = dict(
    _delete_=True,
    type='UDASegmentor',
    segmentor={{_base_.model}},
    teacher_mode='dropout_off',  # dacs.py (the DLV2 head has no dropout)
    methods=[
        dict(
            type='SelfTraining',
            pseudo_threshold=0.968,  # dacs.py
            pseudo_weight_scope='batch',
            pseudo_weight_ignore_top=0,  # dacs.py: no pseudo-label crop
            pseudo_weight_ignore_bottom=0,
            class_mix_candidates='batch',
            color_jitter_strength=0.2,  # dacs.py
            color_jitter_probability=0.2,
            blur=True,
            imnet_feature_dist_lambda=0.0,  # dacs.py: no feature distance
            imnet_feature_dist_classes=None,
            imnet_feature_dist_scale_min_ratio=None),
    ])

train_dataloader = dict(
    batch_size=2,
    dataset=dict(rare_class_sampling=None))  # plain DACS: no RCS

# experiments.py: pmult=True gives the head lr x10; the MiT-only keys
# (pos_block, norm) are not set for CNN backbones, so BN layers keep decay.
optim_wrapper = dict(
    paramwise_cfg=dict(
        _delete_=True, custom_keys=dict(head=dict(lr_mult=10.0))))

custom_hooks = [
    dict(type='EMATeacherHook', alpha=0.99),  # dacs.py alpha (DACS default)
    dict(type='UDADebugVisualizationHook', interval=1000),
]
