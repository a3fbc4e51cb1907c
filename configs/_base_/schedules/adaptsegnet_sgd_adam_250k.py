# AdaptSegNet/ADVENT with an output-space discriminator: the segmentation
# optimizer of adaptsegnet_sgd_250k.py plus the discriminator's Adam
# (lr 1e-4, betas (0.9, 0.99), no weight decay), both with poly 0.9 decay
# over 250k iterations (AdaptSegNet LEARNING_RATE_D, adjust_learning_rate_D).
_base_ = ['./adaptsegnet_sgd_250k.py']
optim_wrapper = dict(
    _delete_=True,
    constructor='UDAOptimWrapperConstructor',
    segmentor=dict(
        type='OptimWrapper',
        optimizer=dict(
            type='SGD', lr=2.5e-4, momentum=0.9, weight_decay=5e-4),
        paramwise_cfg=dict(custom_keys={'decode_head': dict(lr_mult=10.0)})),
    discriminator=dict(
        type='OptimWrapper',
        optimizer=dict(type='Adam', lr=1e-4, betas=(0.9, 0.99))))
# The same poly schedule is built for each optimizer (mmengine applies a
# plain scheduler list to every wrapper of an OptimWrapperDict).
