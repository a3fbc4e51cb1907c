# The AdaptSegNet network that CDGA builds on (docs/cdga.md: G = DeepLab-V2
# ResNet-101, ImageNet init; CDGA's adversarial scheme is AdaptSegNet's):
# the DeepLab Caffe ResNet-101 of ./deeplabv2_r101_caffe.py
# set up as wasidennis/AdaptSegNet model/deeplab_multi.py builds it. Not a
# runnable config; configs/cdga/{gta2cs,synthia2cs}.py inherit it.
_base_ = ['./deeplabv2_r101_caffe.py']
model = dict(
    backbone=dict(
        # deeplab_multi.py sets requires_grad=False on every BatchNorm's
        # affine parameters and trains in train mode (batch statistics);
        # plain BN, batch 1 per process as AdaptSegNet's single GPU.
        norm_cfg=dict(type='BN', requires_grad=False)),
    decode_head=dict(
        # Classifier_Module: conv bias on, and its early `return` sums only
        # the rates 6 and 12 of the four declared.
        bias=True,
        adaptsegnet_early_return=True))
