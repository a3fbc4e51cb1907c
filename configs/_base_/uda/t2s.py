# T2S-DA, "Pulling Target to Source" (Wang et al., arXiv 2305.13752 / IJCV):
# the T2S method and its loss warm-up, to be added to a self-training config
# (configs/t2s/*.py add `t2s_method` to the DAFormer base's methods and
# `t2s_warmup_hook` to its hooks). Defines only these variables, so it can
# sit next to any other base.
#
# RECONSTRUCTED: no official code exists and only the abstract of the paper
# could be read, so every T2S value below is the reconstruction of
# shared/docs/methods.md §4.3 [RECON] (documented in docs/t2s.md), to be
# checked against the PDF (methods.md §6).

t2s_class_names = ('road', 'sidewalk', 'building', 'wall', 'fence',
                       'pole', 'traffic_light', 'traffic_sign', 'vegetation',
                       'terrain', 'sky', 'person', 'rider', 'car', 'truck',
                       'bus', 'train', 'motorcycle', 'bicycle')

t2s_method = dict(
    type='T2S',
    num_classes=19,
    class_names=t2s_class_names,  # names of the per-class log keys
    # §4.3 item 3: DAFormer fused 256-ch stride-4 feature ->
    # Conv1x1(256->256)-BN-ReLU-Conv1x1(256->128) -> L2 norm; student head
    # for queries, EMA copy for keys
    projection_head=dict(
        type='ProjectionHead',
        in_channels=256,
        hidden_channels=256,
        out_channels=128,
        norm_cfg=dict(type='BN')),
    # §4.3 item 4: InfoNCE with the source prototype as positive, tau 0.1;
    # §4.3 item 6: lambda_T2S = 1.0
    loss=dict(type='T2SContrastiveLoss', temperature=0.1, loss_weight=1.0),
    # §4.3 item 4: pull target-side queries to source keys (the paper's
    # claim); 's2t' / 'both' reproduce the central ablation
    direction='t2s',
    # §4.3 item 1a: target-stylised source copies, FDA beta 0.01 (Yang &
    # Soatto, CVPR 2020), each paired with a random target crop of the batch
    style=dict(type='FDAStyleTransfer', beta=0.01),
    target_side='stylised',  # §4.3 item 1b option: 'target_pseudo'/'both'
    pseudo_threshold=0.968,  # for 'target_pseudo' (DAFormer's threshold)
    key_model='teacher',  # §4.3 item 2: keys from the EMA teacher
    num_queries=256,  # §4.3 item 4: M (U2PL/ReCo: 256 queries)
    num_negatives=256,  # §4.3 item 4: N per query
    queue_length=2048,  # §4.3 item 4: per-class FIFO queue of keys
    enqueue_per_class=256,  # keys enqueued per class per iteration
    prototype_momentum=None,  # §4.3 item 4: batch prototypes (0.999 = EMA)
    label_downsample='nearest',  # §4.3 item 3: nearest to the feature grid
    # §4.3 item 5: w_c = (1 - r_c)^gamma / mean over present classes,
    # r_c = EMA (0.99) of the teacher's mean confidence on target pixels
    # pseudo-labelled c
    reweight=True,
    reweight_gamma=1.0,
    reweight_sampling=False,
    perf_metric='target_confidence',
    perf_momentum=0.99,
    # EMA projection head follows the teacher: alpha of EMATeacherHook
    projection_ema_alpha=0.999,
    stylised_ce_weight=0.0,  # §4.3 item 6 option (off)
    seed=0)

# §4.4: lambda_T2S warmed up linearly over the first 1.5k iterations, as
# the learning rate [RECON]
t2s_warmup_hook = dict(
    type='LossWeightScheduleHook',
    schedules={
        't2s.loss_t2s': dict(
            type='linear', begin=0, end=1500, start_factor=0.0,
            end_factor=1.0)
    })
