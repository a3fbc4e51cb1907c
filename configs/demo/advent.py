# Built-in demo, AdvEnt: source_only.py plus the output-space discriminator
# on target self-information maps (configs/advent/gta2cs.py): lambda_adv
# 0.001 and D with Adam 1e-4 betas (0.9, 0.99) as in ADVENT; a narrower
# discriminator (ndf 16 instead of 64) for the 16-wide demo network.
_base_ = ['./source_only.py']
model = dict(methods=[
    dict(type='AdvEnt', num_classes=19, lambda_adv=0.001,
         discriminator=dict(type='FCDiscriminator', ndf=16))
])
optim_wrapper = dict(
    _delete_=True,
    constructor='UDAOptimWrapperConstructor',
    segmentor=dict(optimizer={{_base_.optim_wrapper.optimizer}}),
    discriminator=dict(
        optimizer=dict(type='Adam', lr=1e-4, betas=(0.9, 0.99))))
