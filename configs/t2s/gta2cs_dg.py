# T2S-DA in domain generalisation (methods.md §4.3 item 8 [RECON]): trained
# on GTA5 only, evaluated on Cityscapes val (the paper also reports BDD100K
# and Mapillary, not in scope here). Network, source data (with rare-class
# sampling), schedule and EMA teacher as configs/daformer/gta2cs.py; no
# target images, no self-training branch; the target-side queries are
# randomly stylised source copies (random amplitude spectrum + photometric
# jitter, which need no target image) and r_c is the running IoU of the
# student on them. Every T2S value is reconstructed (docs/t2s.md).
_base_ = ['../daformer/gta2cs.py']

_cityscapes_classes = ('road', 'sidewalk', 'building', 'wall', 'fence',
                       'pole', 'traffic_light', 'traffic_sign', 'vegetation',
                       'terrain', 'sky', 'person', 'rider', 'car', 'truck',
                       'bus', 'train', 'motorcycle', 'bicycle')

t2s_method = dict(
    type='T2S',
    num_classes=19,
    class_names=_cityscapes_classes,
    projection_head=dict(
        type='ProjectionHead',
        in_channels=256,
        hidden_channels=256,
        out_channels=128,
        norm_cfg=dict(type='BN')),
    loss=dict(type='T2SContrastiveLoss', temperature=0.1, loss_weight=1.0),
    direction='t2s',
    dg_mode=True,  # the batch has only 'source'
    # random style [RECON]: log-amplitude noise (sigma 0.3) on the FDA-size
    # low-frequency band (beta 0.01), then gain/brightness/contrast/
    # saturation jitter
    style=dict(
        type='RandomStyleTransfer',
        beta=0.01,
        amplitude_sigma=0.3,
        photometric=True,
        brightness=32.0,
        contrast=(0.5, 1.5),
        saturation=(0.5, 1.5),
        channel_gain=(0.8, 1.2)),
    target_side='stylised',
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
    # no target pseudo-labels in DG: running IoU on the stylised copies
    perf_metric='stylised_iou',
    perf_momentum=0.99,
    projection_ema_alpha=0.999,  # EMATeacherHook alpha below
    stylised_ce_weight=0.0,
    seed=0)

model = dict(methods=[t2s_method])  # no SelfTraining: no target images

# source-only batches (UDADataset with target=None)
train_dataloader = dict(dataset=dict(target=None))

custom_hooks = [
    # keys from the EMA teacher (alpha 0.999, the DAFormer value)
    dict(type='EMATeacherHook', alpha=0.999),
    dict(type='UDADebugVisualizationHook', interval=1000),
    # §4.4: linear warm-up of lambda_T2S over 1.5k iterations [RECON]
    dict(
        type='LossWeightScheduleHook',
        schedules={
            't2s.loss_t2s': dict(
                type='linear', begin=0, end=1500, start_factor=0.0,
                end_factor=1.0)
        }),
]
