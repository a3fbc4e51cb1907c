# CDGA (Kim et al., AAAI 2021) on AdaptSegNet's DeepLab-V2 R101: the model,
# the method and the optimisation, shared by configs/cdga/{gta2cs,synthia2cs}.py
# (which add the data). RECONSTRUCTED: no official code and the paper's
# method section were available; every value marked [RECON] is a
# reconstruction whose reasoning is in docs/cdga.md ("Reconstructed choices").
# Everything else is AdaptSegNet's single-level recipe (wasidennis/AdaptSegNet
# at commit fca9ff0, train_gta2cityscapes_multi.py), on which CDGA's
# adversarial scheme is reconstructed.
_base_ = [
    # AdaptSegNet's DeepLab-V2 (Caffe ResNet-101, frozen BN affine, ASPP
    # rates 6+12 with bias); weights: see ../models/deeplabv2_r101_caffe.py.
    # For the open-mmlab ResNetV1c-101 substitute (used by configs/advent)
    # use '../models/deeplabv2_r101.py'.
    '../models/deeplabv2_r101_caffe_adaptsegnet.py',
    # SGD 2.5e-4 mom 0.9 wd 5e-4 poly 0.9 (head x10), D Adam 1e-4 betas
    # (0.9, 0.99) poly 0.9, 250k scheduled / 150k run (AdaptSegNet).
    '../schedules/adaptsegnet_sgd_adam_250k.py',
]
# 19-way head on Cityscapes trainIds; for SYNTHIA the 3 classes it lacks are
# never supervised (mIoU16/13 are computed from the per-class IoUs).
num_classes = 19
num_groups = 8  # K [RECON, docs/cdga.md; sweep {4, 8, 12}]
warmup_iters = 10000  # source-only warm-up [RECON, docs/cdga.md: 5k-10k
# considered; C's groups of an untrained G are meaningless]

model = dict(
    _delete_=True,
    type='UDASegmentor',
    segmentor={{_base_.model}},
    # AdaptSegNet forwards the source and the target batch separately (and
    # 1280x720 or 1280x760 / 1024x512 cannot be batched together).
    bn_mode='separate',
    methods=[
        dict(
            type='CDGA',
            num_classes=num_classes,
            num_groups=num_groups,
            # AdaptSegNet single-level LAMBDA_ADV_TARGET2 (docs/cdga.md)
            lambda_adv=0.001,
            # AdaptSegNet model/discriminator.py (docs/cdga.md)
            discriminator=dict(type='FCDiscriminator', ndf=64),
            # one D per group [RECON, docs/cdga.md]
            shared_discriminator=False,
            # C: 3x3-ReLU-3x3-ReLU-1x1, 256 wide [RECON, docs/cdga.md]
            grouping=dict(type='CrossDomainGroupingNetwork', channels=256),
            # C sees the segmentation softmax [RECON, docs/cdga.md]
            grouping_input='softmax',
            # L_sc: mean L1 between q^s_k and q^t_k, λ_sc = 0.1
            # [RECON, docs/cdga.md]
            consistency_loss=dict(
                type='SemanticConsistencyLoss',
                distance='l1',
                loss_weight=0.1),
            # L_orth: mean pairwise cosine per domain, λ_orth = 0.1
            # [RECON, docs/cdga.md]
            orthogonality_loss=dict(
                type='ClusterOrthogonalityLoss', loss_weight=0.1),
            # group-level class equivalence as class-balanced BCE in loss_adv
            # and loss_D; 'loss' = the additive GroupClassEquivalenceLoss
            # (the abstract's "a loss"), None = off [RECON, docs/cdga.md]
            class_balance='reweight',
            # the additive term of class_balance='loss': L_ce, λ_ce = 0.1 as
            # λ_sc and λ_orth [RECON, docs/cdga.md]
            class_equivalence_loss=dict(
                type='GroupClassEquivalenceLoss', loss_weight=0.1),
            # q^s from the source labels [RECON, docs/cdga.md]
            source_stats='label',
            # grouping losses train G through C's input and through P^t in
            # q^t (no stop-gradient is mentioned) [RECON]
            detach_grouping_input=False,
            detach_stats_prob=False,
            stats_eps=1e-6,  # ε of the group histograms' denominators
            # D and the statistics at the image size (AdaptSegNet's
            # interp/interp_target before the discriminator)
            upsample_to_input=True,
            # implementation only (same values and gradients): one target D
            # forward for loss_adv and loss_D; K separate D calls (grouped
            # convolutions measured no faster on CPU)
            reuse_target_forward=True,
            grouped_discriminators=False)
    ])

optim_wrapper = dict(
    segmentor=dict(
        paramwise_cfg=dict(
            custom_keys={
                # AdaptSegNet get_10x_lr_params: the classifier
                'decode_head': dict(lr_mult=10.0),
                # C is a new layer like the classifier: lr x10
                # [RECON, docs/cdga.md]
                'methods.0.grouping': dict(lr_mult=10.0),
            })))

custom_hooks = [
    # from adaptsegnet_sgd_250k.py (a list is replaced, not merged)
    dict(type='UDADebugVisualizationHook', interval=5000),
    # Source-only warm-up [RECON, docs/cdga.md]: every CDGA loss (the
    # adversarial, grouping and discriminator losses) is multiplied by 0
    # before `warmup_iters`, by 1 from then on; the source CE always acts.
    dict(
        type='LossWeightScheduleHook',
        schedules={
            'cdga.*':
            dict(
                type='step',
                begin=warmup_iters,
                start_factor=0.0,
                end_factor=1.0)
        }),
]

# AdaptSegNet NUM_STEPS_STOP = 150k of NUM_STEPS = 250k (the poly schedule of
# the base runs to 250k; docs/cdga.md).
train_cfg = dict(max_iters=150000)
