# Source-only baseline SYNTHIA -> Cityscapes (AdaptSegNet recipe, 1280x760
# source). 19-way head; SYNTHIA never labels terrain/truck/train, so report
# mIoU16/mIoU13 (UDAIoUMetric) rather than mIoU: mIoU16 leaves out those three
# classes, mIoU13 also wall, fence and pole.
_base_ = [
    '../_base_/models/deeplabv2_r101.py',
    '../_base_/datasets/synthia2cs_adaptsegnet.py',
    '../_base_/schedules/adaptsegnet_sgd_250k.py',
    '../_base_/default_runtime.py',
]
model = dict(
    _delete_=True, type='UDASegmentor', segmentor={{_base_.model}},
    methods=[])
