"""Frozen backbone + LoRA adapter (``UDASegmentor(freeze_backbone=True,
backbone_adapter=dict(type='LoRA', ...))``, ``models/utils/peft_adapters``).

Frozen parameters get no gradient and no optimizer state and stay bit for
bit the pretrained file's through training and ``--resume`` on the real
Runner; LoRA parameters train; a B = 0 adapter leaves the backbone's
function unchanged (a non-zero B changes it); merged and unmerged adapters
compute the same; the EMA teacher skips what does not train; bad adapter
configs fail naming the key.
"""
import copy

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.optim import DefaultOptimWrapperConstructor
from mmseg.models.segmentors.base import BaseSegmentor
from torch import nn

from e2e_utils import (NUM_CLASSES, assert_resume_exact, make_tiny_uda_data,
                       tiny_runner_cfg)
from mmseg_uda.engine.hooks import ema_update
from mmseg_uda.engine.optimizers import UDAOptimWrapperConstructor
from mmseg_uda.models.utils.peft_adapters import (adapters_unwrapped,
                                                  apply_backbone_tuning,
                                                  merge_adapters,
                                                  tuner_layers,
                                                  unmerge_adapters)
from mmseg_uda.registry import MODELS
from uda_utils import random_uda_batch, tiny_segmentor_cfg

LORA = dict(type='LoRA', rank=4, alpha=8, target_modules=['q_proj', 'v_proj'])


def dinov2_cfg(**kwargs):
    """A two-block DINOv2 (transformers' Dinov2Model) on 8-px patches."""
    cfg = dict(type='DINOv2VisionTransformer',
               arch=dict(embed_dims=32, num_layers=2, num_heads=2),
               patch_size=8, img_size=64, out_indices=(0, 1))
    cfg.update(kwargs)
    return cfg


def dinov2_segmentor(num_classes=4, **backbone):
    seg = tiny_segmentor_cfg(num_classes)
    seg['backbone'] = dinov2_cfg(**backbone)
    seg['decode_head'].update(in_channels=32, in_index=1)
    return seg


def build(segmentor=None, methods=(), **kwargs):
    return MODELS.build(ConfigDict(
        type='UDASegmentor', segmentor=segmentor or dinov2_segmentor(),
        methods=list(methods), **kwargs))


def frozen_names(model):
    return {n for n, p in model.named_parameters()
            if n.startswith('student.backbone.') and 'lora_' not in n}


def lora_names(model):
    return {n for n, p in model.named_parameters()
            if n.startswith('student.') and 'lora_' in n}


# ------------------------------------------------------------- structure
def test_freeze_without_adapter_freezes_backbone_and_keeps_it_in_eval():
    model = build(dinov2_segmentor(drop_path_rate=0.5), freeze_backbone=True)
    model.train()
    backbone = model.student.backbone
    assert not any(p.requires_grad for p in backbone.parameters())
    assert all(p.requires_grad
               for p in model.student.decode_head.parameters())
    assert not backbone.training and model.student.decode_head.training
    x = torch.randn(2, 3, 32, 32)
    feats = backbone(x)
    # nothing in the encoder needs a gradient: autograd records no graph
    # (what torch.no_grad gives), the input gradient path stays legal
    assert torch.is_grad_enabled()
    assert all(f.grad_fn is None and not f.requires_grad for f in feats)
    # eval mode: DropPath off, the frozen encoder is deterministic
    assert all(torch.equal(a, b) for a, b in zip(feats, backbone(x)))
    # negative control: the same backbone trained in full draws DropPath
    full = build(dinov2_segmentor(drop_path_rate=0.5))
    full.train()
    a, b = full.student.backbone(x), full.student.backbone(x)
    assert not torch.equal(a[-1], b[-1])
    assert a[-1].requires_grad
    model.eval()
    assert not backbone.training and not model.student.decode_head.training


def test_lora_trains_only_adapter_params_and_adapter_dropout_follows_mode():
    model = build(freeze_backbone=True,
                  backbone_adapter=dict(LORA, dropout=0.1))
    assert model.adapted_layers == [
        f'dinov2.encoder.layer.{i}.attention.{n}'
        for i in (0, 1) for n in ('q_proj', 'v_proj')]
    trainable = {n for n, p in model.student.named_parameters()
                 if p.requires_grad}
    assert trainable == {n[len('student.'):] for n in lora_names(model)} | {
        n for n, _ in model.student.named_parameters()
        if n.startswith('decode_head.')}
    assert len(lora_names(model)) == 8  # A and B of 4 layers
    model.train()
    layer = tuner_layers(model.student.backbone)[0]
    assert not model.student.backbone.training
    assert layer.lora_dropout['default'].training
    # the teacher has the same structure (EMA pairs parameters in order)
    model_t = build(methods=[dict(type='SelfTraining',
                                  imnet_feature_dist_lambda=0)],
                    freeze_backbone=True, backbone_adapter=LORA)
    assert [n for n, _ in model_t.student.named_parameters()] == \
        [n for n, _ in model_t.teacher.named_parameters()]


def test_zero_b_lora_equals_the_plain_backbone_and_nonzero_b_differs():
    torch.manual_seed(0)
    plain = MODELS.build(dinov2_cfg()).eval()
    adapted = MODELS.build(dinov2_cfg())
    holder = nn.Module()
    holder.backbone = adapted
    apply_backbone_tuning(holder, True, LORA)
    # a plain checkpoint loads into the adapted layers (base_layer.*)
    result = adapted.load_state_dict(plain.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all('lora_' in k
                                       for k in result.missing_keys)
    adapted.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = plain(x)
        assert all(torch.equal(a, b) for a, b in zip(adapted(x), reference))
        for layer in tuner_layers(adapted):
            layer.lora_B['default'].weight.normal_(0, 0.5)
        unmerged = adapted(x)
        assert not torch.allclose(unmerged[-1], reference[-1], atol=1e-3)
        # W0 + (alpha/r)·B·A computes what the adapter branch computes
        merge_adapters(adapted)
        assert all(layer.merged for layer in tuner_layers(adapted))
        merged = adapted(x)
        assert all(torch.allclose(m, u, atol=1e-5)
                   for m, u in zip(merged, unmerged))
        unmerge_adapters(adapted)
        assert all(torch.allclose(a, u, atol=1e-5)
                   for a, u in zip(adapted(x), unmerged))


def test_lora_scaling_is_alpha_over_rank():
    """h = W0·x + (α/r)·B·A·x (Hu et al. 2022, Eq. 3 with the α/r scale)."""
    holder = nn.Module()
    holder.backbone = nn.Sequential(nn.Linear(6, 5))
    apply_backbone_tuning(holder, True, dict(type='LoRA', rank=2, alpha=6,
                                             target_modules=['0']))
    layer = holder.backbone[0]
    with torch.no_grad():
        layer.lora_B['default'].weight.normal_()
        x = torch.randn(3, 6)
        w0 = layer.base_layer.weight
        a = layer.lora_A['default'].weight
        b = layer.lora_B['default'].weight
        expected = x @ (w0 + 3.0 * b @ a).T + layer.base_layer.bias
        assert torch.allclose(holder.backbone(x), expected, atol=1e-5)


def test_init_weights_keeps_b_zero_and_loads_pretrained_strictly(tmp_path):
    # MiT's own init draws every Conv2d (LoRA's B of a conv layer too)
    mit = dict(type='MixVisionTransformer', in_channels=3, embed_dims=8,
               num_stages=1, num_layers=[1], num_heads=[1], patch_sizes=[7],
               strides=[4], sr_ratios=[1], out_indices=(0, ), mlp_ratio=2)
    seg = tiny_segmentor_cfg()
    seg['backbone'] = mit
    seg['decode_head'].update(in_channels=8, in_index=0)
    conv_lora = dict(type='LoRA', rank=2, target_modules=['ffn.layers.0'])

    def lora_b(model):
        return [layer.lora_B['default'].weight.detach().clone()
                for layer in tuner_layers(model.student.backbone)]

    model = build(seg, freeze_backbone=True, backbone_adapter=conv_lora)
    assert len(lora_b(model)) == 1
    model.init_weights()
    assert all(torch.equal(b, torch.zeros_like(b)) for b in lora_b(model))
    # negative control: the same init without unwrapping redraws B
    control = build(seg, freeze_backbone=True, backbone_adapter=conv_lora)
    BaseSegmentor.init_weights(control)
    assert any(b.abs().sum() > 0 for b in lora_b(control))

    # DINOv2's strict pretrained load sees the plain backbone
    torch.manual_seed(1)
    plain = MODELS.build(dinov2_cfg())
    path = str(tmp_path / 'dinov2_tiny.pth')
    torch.save(plain.state_dict(), path)
    model = build(dinov2_segmentor(pretrained=path), freeze_backbone=True,
                  backbone_adapter=LORA)
    model.init_weights()
    loaded = model.student.backbone
    with adapters_unwrapped(loaded):
        state = loaded.state_dict()
    assert state.keys() == plain.state_dict().keys()
    assert all(torch.equal(state[k], v)
               for k, v in plain.state_dict().items())
    # negative control: loading into the wrapped backbone fails
    with pytest.raises(ValueError, match='missing'):
        loaded.load_pretrained(path)


# ------------------------------------------------------------- optimizer
def optimizer_step_states(model, constructor):
    optim = constructor(model)
    model.train()
    for seed in range(2):
        model.train_step(random_uda_batch(seed=seed), optim)
    return optim


@pytest.mark.parametrize('adapter', [None, LORA])
def test_frozen_params_get_no_gradient_and_no_optimizer_state(adapter):
    optim_cfg = dict(optimizer=dict(type='AdamW', lr=1e-3,
                                    weight_decay=0.01))
    model = build(freeze_backbone=True, backbone_adapter=adapter)
    frozen = {p for n, p in model.named_parameters()
              if n in frozen_names(model)}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optim = optimizer_step_states(
        model, lambda m: UDAOptimWrapperConstructor(optim_cfg)(m))
    grouped = {p for g in optim.optimizer.param_groups for p in g['params']}
    assert not grouped & frozen  # not handed to the optimizer at all
    assert not set(optim.optimizer.state) & frozen
    assert all(p.grad is None for p in frozen)
    after = dict(model.named_parameters())
    for name in frozen_names(model):
        assert torch.equal(after[name], before[name]), name
    moved = {n for n in lora_names(model)
             if not torch.equal(after[n], before[n])}
    assert moved == lora_names(model)  # every A and B trained
    # mmengine's default constructor hands every parameter to the
    # optimizer; torch still keeps no state for one without a gradient
    model = build(freeze_backbone=True, backbone_adapter=adapter)
    frozen = {p for n, p in model.named_parameters()
              if n in frozen_names(model)}
    optim = optimizer_step_states(
        model, lambda m: DefaultOptimWrapperConstructor(optim_cfg)(m))
    assert frozen <= {p for g in optim.optimizer.param_groups
                      for p in g['params']}
    assert not set(optim.optimizer.state) & frozen
    assert len(optim.optimizer.state) > 0
    assert all(p.grad is None for p in frozen)


# ------------------------------------------------------------------- EMA
def test_ema_update_skips_frozen_parameters_only_when_asked():
    student, teacher = nn.Linear(3, 3), nn.Linear(3, 3)
    student.weight.requires_grad_(False)
    with torch.no_grad():
        teacher.weight.fill_(1.0)
        teacher.bias.fill_(1.0)
        student.weight.fill_(3.0)
        student.bias.fill_(3.0)
    ema_update(teacher, student, 0.5, trainable_only=True)
    assert torch.equal(teacher.weight, torch.ones(3, 3))  # skipped
    assert torch.equal(teacher.bias, torch.full((3, ), 2.0))
    ema_update(teacher, student, 0.5)  # default: every parameter
    assert torch.equal(teacher.weight, torch.full((3, 3), 2.0))


# ------------------------------------------------------ Runner + resume
@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('tiny_uda_frozen')
    make_tiny_uda_data(str(root))
    return str(root)


def frozen_lora_runner_cfg(data_root, work_dir, pretrained):
    cfg = tiny_runner_cfg(
        data_root, work_dir, max_iters=4,
        methods=[dict(type='SelfTraining', imnet_feature_dist_lambda=0)],
        custom_hooks=[dict(type='EMATeacherHook', alpha=0.99)],
        optim=dict(constructor='UDAOptimWrapperConstructor',
                   optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01)),
        model_extra=dict(freeze_backbone=True, backbone_adapter=LORA))
    cfg.model.segmentor = dinov2_segmentor(
        NUM_CLASSES, pretrained=pretrained, drop_path_rate=0.2)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    return cfg


def test_frozen_lora_trains_resumes_exactly_and_keeps_frozen_weights(
        data_root, tmp_path):
    torch.manual_seed(2)
    plain = MODELS.build(dinov2_cfg(drop_path_rate=0.2))
    path = str(tmp_path / 'dinov2_tiny.pth')
    torch.save(plain.state_dict(), path)
    pretrained = plain.state_dict()
    cfg = frozen_lora_runner_cfg(data_root, str(tmp_path), path)
    # uninterrupted 4 iterations == 2 + --resume 2, every tensor and
    # optimizer state bit for bit
    full = assert_resume_exact(cfg, 4, tmp_path)
    for model in ('student', 'teacher'):
        for key, value in pretrained.items():
            key = key.replace('q_proj.', 'q_proj.base_layer.').replace(
                'v_proj.', 'v_proj.base_layer.')
            assert torch.equal(full[f'model.{model}.backbone.{key}'],
                               value), (model, key)
    lora_b = [k for k in full if k.startswith('model.student.backbone')
              and 'lora_B' in k]
    assert lora_b and all(full[k].abs().sum() > 0 for k in lora_b)
    # the teacher averaged the adapters (it moved away from the student)
    assert any(not torch.equal(full[k], full[k.replace('student',
                                                       'teacher')])
               for k in lora_b)
    # the optimizer holds (and has state for) exactly the trainable
    # parameters: LoRA's A and B and the decode head, no frozen one
    model = MODELS.build(copy.deepcopy(cfg.model))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) == 8 + 4 < len(list(model.parameters()))
    in_groups = [k for k in full if k.startswith('optim.param_groups.')
                 and '.params.' in k]
    with_state = {k.split('.')[2] for k in full
                  if k.startswith('optim.state.') and k.endswith('exp_avg')}
    assert len(in_groups) == len(with_state) == len(trainable)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize('adapter, match', [
    (dict(LORA, target_modules=['query', 'value']),
     r"backbone_adapter.target_modules=\['query', 'value'\] cannot be "
     r"adapted in DINOv2VisionTransformer.*q_proj"),
    (dict(LORA, target_modules=['norm1']),
     r'backbone_adapter.target_modules.*not supported.*q_proj'),
    (dict(type='Rein'), r"backbone_adapter.type='Rein' is not a known"),
    (dict(type='LoRA', rank=4),
     r'backbone_adapter.target_modules is required'),
    (dict(LORA, rank=0), r'backbone_adapter.rank must be a positive int'),
    (dict(LORA, r=8), r'backbone_adapter.r: use backbone_adapter.rank'),
    (dict(LORA, bogus=1), r'backbone_adapter.bogus is not a LoRA option'),
    (dict(LORA, target_modules=[]),
     r'backbone_adapter.target_modules must be a non-empty list'),
    (dict(LORA, use_dora=True),
     r'backbone_adapter.use_dora=True is not supported'),
    (dict(LORA, init_lora_weights='pissa'),
     r"backbone_adapter.init_lora_weights='pissa' is not supported"),
])
def test_bad_adapter_configs_name_the_key(adapter, match):
    with pytest.raises(ValueError, match=match):
        build(freeze_backbone=True, backbone_adapter=adapter)


def test_adapter_without_freeze_and_backbone_less_models_are_refused():
    with pytest.raises(ValueError, match='freeze_backbone=False'):
        build(backbone_adapter=LORA)
    with pytest.raises(ValueError, match='has no `backbone`'):
        apply_backbone_tuning(nn.Linear(2, 2), True, None)
    with pytest.raises(ValueError, match='imnet_feature_dist_lambda=0'):
        build(methods=[dict(type='SelfTraining',
                            imnet_feature_dist_lambda=0.005,
                            imnet_feature_dist_encoder=dinov2_cfg())],
              freeze_backbone=True)
