# Built-in demo, T2S-DA (reconstructed, docs/t2s.md): the demo DAFormer
# self-training (daformer.py) plus the category-wise contrastive loss that
# pulls FDA-stylised source features to the teacher's source features.
# The demo keeps the weight-free FDA engine (the real configs use the
# authors' StyleAugmentor, whose weight files the demo does not have).
# Demo-sized: projection head on the 128-ch layer4 feature of the small
# DeepLab-V2, 64 queries/negatives and 256-key queues, EMA 0.99 like the
# demo teacher, a 50-iteration warm-up of the loss.
_base_ = ['./daformer.py']
t2s_method = dict(
    type='T2S',
    num_classes=19,
    projection_head=dict(
        type='ProjectionHead',
        in_channels=128,
        hidden_channels=128,
        out_channels=64,
        norm_cfg=dict(type='BN')),
    loss=dict(type='T2SContrastiveLoss', temperature=0.1, loss_weight=1.0),
    direction='t2s',
    style=dict(type='FDAStyleTransfer', beta=0.01),
    num_queries=64,
    num_negatives=64,
    queue_length=256,
    enqueue_per_class=32,
    projection_ema_alpha=0.99,
    seed=0)
model = dict(methods=_base_.model.methods + [t2s_method])
custom_hooks = _base_.custom_hooks + [
    dict(
        type='LossWeightScheduleHook',
        schedules={
            't2s.loss_t2s': dict(type='linear', begin=0, end=50)
        })
]
