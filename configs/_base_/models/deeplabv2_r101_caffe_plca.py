# The DeepLab-V2 ResNet-101 (Caffe) network exactly as PLCA builds it
# (model/segmentation/deeplabv2.py at e01d77a, docs/plca.md): the shared
# ./deeplabv2_r101_caffe.py (BGR mean-only normalisation,
# output stride 8, trainable BN, ASPP rates 6/12/18/24 summed, bias=False)
# with PLCA's classifier init and source cross-entropy.
_base_ = ['./deeplabv2_r101_caffe.py']
model = dict(
    decode_head=dict(
        # PyTorch's default conv init for the ASPP classifier (PLCA does
        # not re-initialise it; AdaptSegNet's N(0, 0.01) is the base's)
        init_cfg=None,
        # nn.CrossEntropyLoss(ignore_index=255): mean over labelled pixels
        loss_decode=dict(
            type='CrossEntropyLoss',
            use_sigmoid=False,
            loss_weight=1.0,
            avg_non_ignore=True)))
