# MIC(DAFormer) GTA5 -> Cityscapes (Hoyer et al., CVPR 2023, Table 1, row
# "DAFormer + MIC"): the DAFormer recipe of configs/daformer/gta2cs.py,
# unchanged (MiT-B5 + DAFormer head, GTA 1280x720 / Cityscapes 1024x512,
# 512x512 crops, RCS T=0.01 min_crop_ratio 0.5, pseudo-label crop 15/120
# rows, thing-class FD, EMA alpha 0.999, AdamW 6e-5 poly + warm-up, 40k
# iterations, whole-image inference) plus MaskedImageConsistency.
# Source: lhoyer/MIC @ 2f932a9, seg/experiments.py id 81, row
# ('daformer_sepaspp', 'mitb5', uda_daformer): uda 'dacs_a999_fdthings',
# rcs_T 0.01, plcrop True, mask_mode 'separatetrgaug', mask_ratio 0.7,
# mask_block_size 32 ("half the patch size when training with half
# resolution"), seeds 0, 1, 2 (seed 0 here, default_runtime.py).
# Reference: 70.6 mIoU reported in the MIC paper's Table 1 (mean of 3 seeds;
# not verified here).
_base_ = ['../daformer/gta2cs.py', '../_base_/uda/mic.py']
model = dict(methods=_base_.model.methods + [
    dict(
        _base_.mic_method,
        # experiments.py id 81: mask_block_size=32 at 512x512 crops
        mask_generator=dict(type='block', mask_ratio=0.7,
                            mask_block_size=32))
])
