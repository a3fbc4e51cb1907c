# T2S-DA, "Pulling Target to Source" (Wang et al., arXiv 2305.13752 / IJCV):
# the T2S method and its loss warm-up, to be added to a self-training config
# (configs/t2s/*.py add `t2s_method` to the DAFormer base's methods and
# `t2s_warmup_hook` to its hooks). Defines only these variables, so it can
# sit next to any other base.
#
# RECONSTRUCTED: no official code of T2S-DA exists and only the abstract of
# the paper could be read, so every T2S value below is a reconstruction
# [RECON], documented with its reasoning in docs/t2s.md. The style engine is
# the exception: the first author's repository Haochen-Wang409/StypeTransfer
# (commit fd8e847) says its style transfer "is used by our IJCV paper
# 'Pulling Target to Source'", and that engine is Jackson et al.'s
# StyleAugmentor (philipjackson/style-augmentation, commit 0273e2e).

# T2S-DA's style engine (docs/t2s.md, "Style engine"): StyleAugmentor
# (Jackson et al., CVPRW 2019), Ghiasi et al.'s arbitrary-style network in a
# random Painter-by-Numbers style mixed 50/50 with the image's own style; no
# target image needed. Weights are user-supplied: the two upstream files of
# philipjackson/style-augmentation styleaug/checkpoints/ (README,
# "Pretrained weights"); the embedding statistics ship with mmseg-uda.
t2s_style_augmentor = dict(
    type='StyleAugmentorStyleTransfer',
    transformer_ckpt='pretrained/style_augmentor/checkpoint_transformer.pth',
    predictor_ckpt='pretrained/style_augmentor/checkpoint_stylepredictor.pth',
    embeddings_ckpt=None,  # None: the packaged checkpoint_embeddings.pth
    alpha=0.5,  # random-style weight: upstream and StypeTransfer demo default
    base_embedding='predictor',  # (1 - alpha) term: the image's own style
    # predictor input in [0, 1] as upstream's README and statistics script;
    # 255 = the 0-255 input of StypeTransfer's demo_style.py [RECON: T2S-DA's
    # value range is unknown]
    predictor_input_scale=1.0,
    downsamples=0)  # upstream option; 1 = transformer at half resolution
# Ablations of the style engine (documented in docs/t2s.md), each a
# replacement of `style=` in t2s_method (configs/t2s/gta2cs_fda.py is the
# first as a ready config):
#   style=dict(type='FDAStyleTransfer', beta=0.01)  # FDA with a batch target
#   style=dict(type='LabStyleTransfer')             # CIELAB mean/std transfer
#   style=dict(type='RandomStyleTransfer')          # amplitude noise + jitter
# e.g. --cfg-options model.methods.1.style.alpha=1.0 for pure random styles.

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
    # stylised source copies x~_s: StyleAugmentor (above); FDA/LAB/random
    # are the ablations listed above
    style=t2s_style_augmentor,
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
