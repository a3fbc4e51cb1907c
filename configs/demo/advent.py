# Built-in demo, AdvEnt: source_only.py plus the output-space discriminator
# on target self-information maps (configs/advent/gta2cs.py), D with Adam
# 1e-4 betas (0.9, 0.99) as in ADVENT. The adversarial weight is raised from
# 0.001 to 0.01 because the demo trains for a few hundred iterations, not
# 120k.
_base_ = ['./source_only.py']
model = dict(methods=[
    dict(type='AdvEnt', num_classes=19, lambda_adv=0.01,
         discriminator=dict(type='FCDiscriminator', ndf=32))
])
optim_wrapper = dict(
    _delete_=True,
    constructor='UDAOptimWrapperConstructor',
    segmentor=dict(optimizer={{_base_.optim_wrapper.optimizer}}),
    discriminator=dict(
        optimizer=dict(type='Adam', lr=1e-4, betas=(0.9, 0.99))))
