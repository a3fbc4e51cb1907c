# AdvEnt (Vu et al., CVPR 2019), single level, GTA5 -> Cityscapes on
# DeepLab-V2 R101: discriminator on the weighted self-information of the
# target prediction (valeoai/ADVENT advent/domain_adaptation/config.py:
# LAMBDA_ADV_MAIN=0.001, Adam 1e-4 betas (0.9, 0.99), EARLY_STOP=120k of
# MAX_ITERS=250k). Reported: 43.8 mIoU (AdvEnt alone, ADVENT paper Table 1).
_base_ = [
    '../_base_/models/deeplabv2_r101.py',
    '../_base_/datasets/gta2cs_adaptsegnet.py',
    '../_base_/schedules/adaptsegnet_sgd_adam_250k.py',
    '../_base_/default_runtime.py',
]
model = dict(
    _delete_=True,
    type='UDASegmentor',
    segmentor={{_base_.model}},
    # source and target forwarded separately, as ADVENT's train loop does
    bn_mode='separate',
    methods=[
        dict(
            type='AdvEnt',
            num_classes=19,
            lambda_adv=0.001,  # LAMBDA_ADV_MAIN
            discriminator=dict(type='FCDiscriminator', ndf=64),
            upsample_to_input=True)  # D sees full-resolution entropy maps
    ])
train_cfg = dict(max_iters=120000)  # ADVENT EARLY_STOP
