# Style-engine ablation of configs/t2s/gta2cs.py: x~_s made by Fourier domain
# adaptation (Yang & Soatto, CVPR 2020; beta 0.01, the centred 11x11
# low-frequency amplitude band at 512x512) towards a target crop drawn from
# the global batch, instead of StyleAugmentor. Weight-free; everything else
# unchanged. The other weight-free engines are listed in
# configs/_base_/uda/t2s.py (LabStyleTransfer, RandomStyleTransfer).
_base_ = ['./gta2cs.py']
t2s_fda = dict(
    _base_.t2s_method, style=dict(type='FDAStyleTransfer', beta=0.01))
model = dict(methods=_base_.model.methods[:-1] + [t2s_fda])
