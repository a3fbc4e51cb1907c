# T2S-DA on DeepLab-V2 R101, GTA5 -> Cityscapes: the DACS-on-DLV2 base of
# configs/daformer/gta2cs_dlv2.py (DAFormer's re-training of DACS: EMA alpha
# 0.99, no RCS/FD/pseudo-label crop, AdamW/poly10warm 40k) plus the T2S
# module. Only the config changes from configs/t2s/gta2cs.py: the projection
# head reads DLV2Head's pre-classifier feature, the 2048-ch layer4 map
# (stride 8), and the EMA projection head follows the teacher's alpha 0.99.
# All other T2S values are the reconstruction of methods.md §4.3 [RECON]
# (docs/t2s.md); the paper's DeepLab-V2 numbers are not known here.
_base_ = ['../daformer/gta2cs_dlv2.py']

_cityscapes_classes = ('road', 'sidewalk', 'building', 'wall', 'fence',
                       'pole', 'traffic_light', 'traffic_sign', 'vegetation',
                       'terrain', 'sky', 'person', 'rider', 'car', 'truck',
                       'bus', 'train', 'motorcycle', 'bicycle')

t2s_method = dict(
    type='T2S',
    num_classes=19,
    class_names=_cityscapes_classes,
    # DLV2Head feature = layer4 output, 2048 channels (the only change to
    # the network side of T2S)
    projection_head=dict(
        type='ProjectionHead',
        in_channels=2048,
        hidden_channels=256,
        out_channels=128,
        norm_cfg=dict(type='BN')),
    loss=dict(type='T2SContrastiveLoss', temperature=0.1, loss_weight=1.0),
    direction='t2s',
    style=dict(type='FDAStyleTransfer', beta=0.01),
    target_side='stylised',
    pseudo_threshold=0.968,
    key_model='teacher',
    num_queries=256,
    num_negatives=256,
    queue_length=2048,
    enqueue_per_class=256,
    prototype_momentum=None,
    label_downsample='nearest',
    reweight=True,
    reweight_gamma=1.0,
    reweight_sampling=False,
    perf_metric='target_confidence',
    perf_momentum=0.99,
    # EMATeacherHook alpha of the DACS base (0.99)
    projection_ema_alpha=0.99,
    stylised_ce_weight=0.0,
    seed=0)

model = dict(methods=_base_.model.methods + [t2s_method])

# §4.4: linear warm-up of lambda_T2S over 1.5k iterations [RECON]
custom_hooks = _base_.custom_hooks + [
    dict(
        type='LossWeightScheduleHook',
        schedules={
            't2s.loss_t2s': dict(
                type='linear', begin=0, end=1500, start_factor=0.0,
                end_factor=1.0)
        })
]
