# MIC, "Masked Image Consistency for Context-Enhanced Domain Adaptation"
# (Hoyer et al., CVPR 2023): the MaskedImageConsistency method, to be added
# after SelfTraining in a self-training config (configs/mic/*.py append
# `mic_method` to the base's methods). Defines only this variable, so it can
# sit next to any other base.
#
# Values: lhoyer/MIC @ 2f932a9, seg/configs/mic/gtaHR2csHR_mic_hrda.py
# (`uda` MIC keys) and seg/experiments.py (id 80: MIC(HRDA) for every
# benchmark; id 81: MIC with other hosts). DACS's colour augmentation values
# come from seg/configs/_base_/uda/dacs.py.
mic_method = dict(
    type='MaskedImageConsistency',
    # "Apply masking to color-augmented target images" (GTA/SYNTHIA -> CS);
    # CS -> ACDC / Dark Zurich use 'separate' (experiments.py id 80)
    mask_mode='separatetrgaug',
    # mask_generator=dict(type='block', mask_ratio=0.7, mask_block_size=64)
    # (HRDA's 1024 crops; experiments.py id 81 uses 32 at DAFormer's 512)
    mask_generator=dict(type='block', mask_ratio=0.7, mask_block_size=64),
    # "Equal weighting of MIC loss": mask_lambda=1
    mask_lambda=1.0,
    # "Use the same teacher alpha for MIC as for DAFormer self-training" and
    # "the same pseudo label confidence threshold": the shared EMA teacher
    # and SelfTraining's pseudo-weight
    mask_alpha='same',
    mask_pseudo_threshold='same',
    # DACS colour jitter s = 0.2, p = 0.2 (_base_/uda/dacs.py); the MIC
    # module draws its blur gate regardless of DACS's `blur`
    color_jitter_strength=0.2,
    color_jitter_probability=0.2,
    blur=True,
    # official: mask_lambda multiplies only decode.loss_seg (HRDA's fused
    # term, not the detail term)
    mask_lambda_all_terms=False)
