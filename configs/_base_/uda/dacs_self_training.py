# DACS self-training as DAFormer (Hoyer et al., CVPR 2022) configures it:
# the SelfTraining settings shared by the DAFormer, HRDA and VFM bases
# (configs/_base_/uda/{daformer,hrda}.py and configs/vfm/*), which add the
# host-specific keys (pseudo-label crop rows, the frozen ImageNet encoder).
# Defines only this variable, so it can sit next to any other base.
# Values: lhoyer/DAFormer@e6f6e04 configs/_base_/uda/dacs.py and
# dacs_a999_fdthings.py (the same files in lhoyer/HRDA@c370b5b and
# lhoyer/MIC@2f932a9).
dacs_self_training = dict(
    type='SelfTraining',
    # dacs.py pseudo_threshold
    pseudo_threshold=0.968,
    # dacs.py::forward_train: one confident fraction for the batch
    pseudo_weight_scope='batch',
    # get_class_masks: candidates = classes of the whole source batch
    class_mix_candidates='batch',
    # dacs.py color_jitter_strength / color_jitter_probability, blur
    color_jitter_strength=0.2,
    color_jitter_probability=0.2,
    blur=True,
    # "Thing-Class Feature Distance" (dacs_a999_fdthings.py):
    # imnet_feature_dist_lambda, imnet_feature_dist_classes,
    # imnet_feature_dist_scale_min_ratio; the host base adds the frozen
    # ImageNet encoder (imnet_feature_dist_encoder, same architecture as the
    # student's backbone, copied from the ImageNet-initialised student at
    # the first iteration: imnet_feature_dist_init='student')
    imnet_feature_dist_lambda=0.005,
    imnet_feature_dist_classes=[6, 7, 11, 12, 13, 14, 15, 16, 17, 18],
    imnet_feature_dist_scale_min_ratio=0.75,
    imnet_feature_dist_init='student')
