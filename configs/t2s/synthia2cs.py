# T2S-DA (Wang et al., arXiv 2305.13752 / IJCV) SYNTHIA -> Cityscapes: the
# DAFormer self-training base of configs/daformer/synthia2cs.py, unchanged,
# plus the T2S module with the same values as configs/t2s/gta2cs.py
# (StyleAugmentor style engine; the rest reconstructed, docs/t2s.md). 19-way
# head:
# terrain, truck and train never occur in SYNTHIA labels, so they are never
# T2S classes (no queries, no prototypes); mIoU16/mIoU13 come from the
# per-class IoUs. The paper's numbers are not known here; the DAFormer base
# alone reports 60.9 mIoU16.
_base_ = ['../daformer/synthia2cs.py', '../_base_/uda/t2s.py']
model = dict(methods=_base_.model.methods + [_base_.t2s_method])
custom_hooks = _base_.custom_hooks + [_base_.t2s_warmup_hook]
