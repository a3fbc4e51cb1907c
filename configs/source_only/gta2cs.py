# Source-only baseline GTA5 -> Cityscapes: DeepLab-V2 R101 trained on GTA5
# only, the AdaptSegNet recipe (wasidennis/AdaptSegNet @ fca9ff0f,
# train_gta2cityscapes_multi.py): 1280x720 source / 1024x512
# whole images, batch 1, SGD 2.5e-4 poly 0.9, 150k of 250k iterations.
# Reference: 36.6 mIoU (source-only ResNet-101 row of AdaptSegNet, Tsai et al.,
# CVPR 2018, Table 1).
_base_ = [
    '../_base_/models/deeplabv2_r101.py',
    '../_base_/datasets/gta2cs_adaptsegnet.py',
    '../_base_/schedules/adaptsegnet_sgd_250k.py',
    '../_base_/default_runtime.py',
]
model = dict(
    _delete_=True,
    type='UDASegmentor',
    segmentor={{_base_.model}},
    methods=[],  # source only: the student's CE on the source batch
)
