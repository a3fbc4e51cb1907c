# CDGA (Kim et al., AAAI 2021) on AdaptSegNet's DeepLab-V2 R101: the model,
# the method and the optimisation, shared by configs/cdga/{gta2cs,synthia2cs}.py
# (which add the data). RECONSTRUCTED: no official code and the paper's
# method section were available; every value marked [RECON] follows
# shared/docs/methods.md §3.2-3.5 (see docs/cdga.md). Everything else is
# AdaptSegNet's single-level recipe (wasidennis/AdaptSegNet
# train_gta2cityscapes_multi.py), on which CDGA's adversarial scheme is
# reconstructed (methods.md §3.4).
_base_ = [
    # AdaptSegNet's DeepLab-V2 (Caffe ResNet-101, frozen BN affine, ASPP
    # rates 6+12 with bias); weights: see ../models/deeplabv2_r101_caffe.py.
    # For the open-mmlab ResNetV1c-101 substitute (used by configs/advent)
    # use '../models/deeplabv2_r101.py'.
    '../models/deeplabv2_r101_caffe_adaptsegnet.py',
    # SGD 2.5e-4 mom 0.9 wd 5e-4 poly 0.9 (head x10), D Adam 1e-4 betas
    # (0.9, 0.99) poly 0.9, 250k scheduled / 150k run (methods.md §3.4).
    '../schedules/adaptsegnet_sgd_adam_250k.py',
]
# 19-way head on Cityscapes trainIds (methods.md §1.2); for SYNTHIA the 3
# classes it lacks are never supervised (§1.3 style (b), mIoU16/13 from the
# per-class IoUs).
num_classes = 19
num_groups = 8  # K [RECON, methods.md §3.2; sweep {4, 8, 12}]
warmup_iters = 10000  # source-only warm-up [RECON, methods.md §3.4: 5k-10k]

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
            # AdaptSegNet single-level LAMBDA_ADV_TARGET2 (methods.md §3.3 #7)
            lambda_adv=0.001,
            # AdaptSegNet model/discriminator.py (methods.md §3.2)
            discriminator=dict(type='FCDiscriminator', ndf=64),
            # one D per group [RECON, methods.md §3.2]
            shared_discriminator=False,
            # C: 3x3-ReLU-3x3-ReLU-1x1, 256 wide [RECON, methods.md §3.2]
            grouping=dict(type='CrossDomainGroupingNetwork', channels=256),
            # C sees the segmentation softmax [RECON, methods.md §3.2]
            grouping_input='softmax',
            # L_sc: mean L1 between q^s_k and q^t_k, λ_sc = 0.1
            # [RECON, methods.md §3.3 items 3, 7]
            consistency_loss=dict(
                type='SemanticConsistencyLoss',
                distance='l1',
                loss_weight=0.1),
            # L_orth: mean pairwise cosine per domain, λ_orth = 0.1
            # [RECON, methods.md §3.3 items 4, 7]
            orthogonality_loss=dict(
                type='ClusterOrthogonalityLoss', loss_weight=0.1),
            # group-level class equivalence in loss_adv and loss_D
            # [RECON, methods.md §3.3 item 6]
            class_balance=True,
            # q^s from the source labels [RECON, methods.md §3.3 item 2]
            source_stats='label',
            # grouping losses train G through C's input and through P^t in
            # q^t (no stop-gradient in methods.md §3.3) [RECON]
            detach_grouping_input=False,
            detach_stats_prob=False,
            stats_eps=1e-6,  # ε of methods.md §3.3 item 2
            # D and the statistics at the image size (AdaptSegNet's
            # interp/interp_target before the discriminator)
            upsample_to_input=True)
    ])

optim_wrapper = dict(
    segmentor=dict(
        paramwise_cfg=dict(
            custom_keys={
                # AdaptSegNet get_10x_lr_params: the classifier
                'decode_head': dict(lr_mult=10.0),
                # C is a new layer like the classifier: lr x10
                # [RECON, methods.md §3.3 item 7 / §3.4]
                'methods.0.grouping': dict(lr_mult=10.0),
            })))

custom_hooks = [
    # from adaptsegnet_sgd_250k.py (a list is replaced, not merged)
    dict(type='UDADebugVisualizationHook', interval=5000),
    # Source-only warm-up [RECON, methods.md §3.4]: every CDGA loss (the
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
# the base runs to 250k; methods.md §3.4).
train_cfg = dict(max_iters=150000)
