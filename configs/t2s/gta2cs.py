# T2S-DA, "Pulling Target to Source" (Wang et al., arXiv 2305.13752 / IJCV)
# GTA5 -> Cityscapes: the DAFormer self-training base of
# configs/daformer/gta2cs.py, unchanged (network, data, RCS, schedule, EMA
# teacher alpha 0.999), plus the T2S contrastive module.
#
# RECONSTRUCTED: no official code exists and only the abstract of the paper
# could be read, so every T2S value is a reconstruction [RECON] documented
# in docs/t2s.md, except the style engine: StyleAugmentor (Jackson et al.,
# CVPRW 2019), the engine of the first author's StypeTransfer repository
# (configs/_base_/uda/t2s.py; needs its two weight files, README "Pretrained
# weights"; configs/t2s/gta2cs_fda.py is the FDA ablation). The paper's
# numbers are not known here; the DAFormer base alone reports 68.3 mIoU.
_base_ = ['../daformer/gta2cs.py', '../_base_/uda/t2s.py']
model = dict(methods=_base_.model.methods + [_base_.t2s_method])
custom_hooks = _base_.custom_hooks + [_base_.t2s_warmup_hook]
