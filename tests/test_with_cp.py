"""Gradient checkpointing of the MiT encoder (mmseg's
``MixVisionTransformer(with_cp=True)``, the memory-saving setting that
docs/hrda.md and docs/mic.md recommend for 24 GB GPUs) inside HRDA and the
UDASegmentor: one MIC(HRDA) training step with ``with_cp=True`` gives the
gradients of ``with_cp=False`` (DropPath and dropout on, so the recomputed
forward must replay the same random draws), the student's encoder blocks
really are recomputed in the backward while the no-grad teacher is not,
and the student's forward stores fewer activations for the backward."""
import copy

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper

import mmseg_uda  # noqa: F401
from mmseg_uda.registry import MODELS
from uda_utils import random_uda_batch

# A tiny MiT (2 blocks per stage): the checkpointed unit is mmseg's
# TransformerEncoderLayer (attention + Mix-FFN), as in MiT-B5.
TINY_MIT = dict(
    type='MixVisionTransformer', in_channels=3, embed_dims=8, num_stages=4,
    num_layers=[2, 2, 2, 2], num_heads=[1, 2, 4, 8],
    patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2], sr_ratios=[8, 4, 2, 1],
    out_indices=(0, 1, 2, 3), mlp_ratio=2, qkv_bias=True,
    drop_path_rate=0.2,  # random draws that the recomputation must replay
    norm_cfg=dict(type='LN', eps=1e-6))


def hrda_mic_cfg(with_cp):
    """MIC(HRDA) on the tiny MiT: the recipe's structure (SelfTraining with
    feature distance on the context features, MIC with colour-augmented
    masked target, HRDA 0.5 context + detail crop) at 64² crops."""
    return ConfigDict(
        type='UDASegmentor',
        segmentor=dict(
            type='HRDAEncoderDecoder',
            data_preprocessor=dict(
                type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                seg_pad_val=255),
            backbone=dict(TINY_MIT, with_cp=with_cp),
            decode_head=dict(
                type='HRDAHead', single_scale_head='FCNHead',
                output_stride=4, in_channels=8, in_index=0, channels=8,
                num_convs=1, concat_input=False, dropout_ratio=0.1,
                num_classes=4, hr_loss_weight=0.1),
            scales=[1, 0.5], hr_crop_size=(32, 32), crop_coord_divisible=8,
            feature_scale=0.5, train_cfg=dict(), test_cfg=dict(mode='whole')),
        teacher_mode='dropout_off',
        methods=[
            dict(type='SelfTraining', pseudo_threshold=0.0,
                 pseudo_weight_ignore_top=0, pseudo_weight_ignore_bottom=0,
                 imnet_feature_dist_lambda=0.005,
                 imnet_feature_dist_classes=[1, 2],
                 imnet_feature_dist_encoder=dict(TINY_MIT, drop_path_rate=0),
                 imnet_feature_dist_init='student', seed=3),
            dict(type='MaskedImageConsistency', mask_mode='separatetrgaug',
                 mask_generator=dict(type='block', mask_ratio=0.7,
                                     mask_block_size=8), seed=5),
        ])


def build(with_cp):
    torch.manual_seed(0)
    model = MODELS.build(hrda_mic_cfg(with_cp))
    model.init_weights()
    model.teacher.load_state_dict(model.student.state_dict())
    model.teacher_initialized.fill_(1)
    model.train()
    return model


def train_step_gradients(model):
    """The student's gradients of one UDA training step (taken right
    before the optimizer step), the step's losses, and how often each
    encoder block ran."""
    optim = OptimWrapper(torch.optim.SGD(model.student.parameters(), lr=0.1))
    grads = {}

    def record(opt, args, kwargs):
        for name, p in model.student.named_parameters():
            if p.grad is not None:
                grads[name] = p.grad.detach().clone()

    optim.optimizer.register_step_pre_hook(record)
    calls = {'student': 0, 'teacher': 0}

    def counter(key):
        def hook(module, args, output):
            calls[key] += 1
        return hook

    # the attention of the first block of stage 1: it runs inside the
    # checkpointed function of its TransformerEncoderLayer
    model.student.backbone.layers[0][1][0].attn.register_forward_hook(
        counter('student'))
    model.teacher.backbone.layers[0][1][0].attn.register_forward_hook(
        counter('teacher'))
    MessageHub.get_current_instance().update_info('iter', 0)
    log_vars = model.train_step(
        copy.deepcopy(random_uda_batch(batch_size=2, h=64, w=64, seed=1)),
        optim)
    return grads, log_vars, calls


@pytest.fixture(scope='module')
def steps():
    return {cp: train_step_gradients(build(cp)) for cp in (False, True)}


def test_with_cp_reaches_the_student_and_teacher_blocks():
    model = build(True)
    for net in (model.student, model.teacher):
        blocks = [b for stage in net.backbone.layers for b in stage[1]]
        assert blocks and all(b.with_cp for b in blocks)
    # the frozen ImageNet encoder of the feature distance has its own config
    assert not any(getattr(m, 'with_cp', False)
                   for m in model.methods[0].imnet_encoder.modules())


def test_same_losses_and_gradients_as_without_checkpointing(steps):
    (g_plain, log_plain, _), (g_cp, log_cp, _) = steps[False], steps[True]
    for key in ('src.loss_ce', 'selftraining.loss_mix',
                'selftraining.loss_fd', 'mic.loss_masked'):
        assert key in log_plain, sorted(log_plain)
        torch.testing.assert_close(log_cp[key], log_plain[key],
                                   rtol=0, atol=0)
    assert g_plain.keys() == g_cp.keys()
    encoder = [n for n in g_plain if n.startswith('backbone.layers')]
    assert len(encoder) > 50 and all(
        g_plain[n].abs().sum() > 0 for n in encoder[:10])
    for name in g_plain:
        # a recomputed forward is bitwise the same on CPU; the backward may
        # sum a parameter's two branches (context, detail) in another order
        torch.testing.assert_close(g_cp[name], g_plain[name],
                                   rtol=1e-5, atol=1e-7, msg=name)


def test_gradient_comparison_detects_a_changed_draw(steps):
    """Negative control: the same step with another DropPath draw (a
    different iteration seed) gives gradients the comparison rejects."""
    model = build(True)
    MessageHub.get_current_instance().update_info('iter', 0)
    model.rng_base_seed.fill_(int(model.rng_base_seed) + 1)
    g_other, _, _ = train_step_gradients(model)
    g_plain = steps[False][0]
    with pytest.raises(AssertionError):
        for name in g_plain:
            torch.testing.assert_close(g_other[name], g_plain[name],
                                       rtol=1e-5, atol=1e-7)


def test_student_blocks_recomputed_teacher_not(steps):
    calls_plain, calls_cp = steps[False][2], steps[True][2]
    # every student training forward of the block runs again in the backward
    assert calls_cp['student'] == 2 * calls_plain['student'] > 0
    # the teacher runs without gradients: nothing to checkpoint
    assert calls_cp['teacher'] == calls_plain['teacher'] > 0


def saved_activation_bytes(model, img):
    """Bytes of the tensors autograd saves for the backward during one
    student training forward (HRDA context + detail branches)."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model.student.uda_train_forward(img)
    del out
    return total[0]


def test_checkpointing_saves_fewer_activations():
    img = torch.randn(2, 3, 128, 128)
    sizes = {}
    for cp in (False, True):
        model = build(cp)
        torch.manual_seed(0)
        sizes[cp] = saved_activation_bytes(model, img)
    # the encoder blocks' activations are no longer kept (the tiny MiT's
    # patch embeddings and the head still are)
    assert sizes[True] < 0.6 * sizes[False], sizes
