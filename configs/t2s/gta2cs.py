# T2S-DA, "Pulling Target to Source" (Wang et al., arXiv 2305.13752 / IJCV)
# GTA5 -> Cityscapes: the DAFormer self-training base of
# configs/daformer/gta2cs.py, unchanged (network, data, RCS, schedule, EMA
# teacher alpha 0.999), plus the T2S contrastive module.
#
# RECONSTRUCTED: no official code exists and only the abstract of the paper
# could be read, so every T2S value below is the reconstruction of
# shared/docs/methods.md §4.3 [RECON] (documented in docs/t2s.md), to be
# checked against the PDF (methods.md §6). The paper's numbers are not
# known here (methods.md §4.7); the DAFormer base alone reports 68.3 mIoU.
_base_ = ['../daformer/gta2cs.py', '../_base_/uda/t2s.py']
model = dict(methods=_base_.model.methods + [_base_.t2s_method])
custom_hooks = _base_.custom_hooks + [_base_.t2s_warmup_hook]
