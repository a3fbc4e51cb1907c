"""UDASegmentor: one train step, gradient routing, errors, inference."""
import copy

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapperDict

from mmseg_uda.engine.optimizers import UDAOptimWrapperConstructor
from mmseg_uda.models.uda import BaseUDAMethod, UDAContext
from mmseg_uda.models.utils import decode_head_forward
from mmseg_uda.registry import MODELS
from uda_utils import random_uda_batch, tiny_segmentor_cfg, uda_model_cfg

ADV_OPTIM = dict(
    constructor='UDAOptimWrapperConstructor',
    segmentor=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
    discriminator=dict(optimizer=dict(type='Adam', lr=1e-4,
                                      betas=(0.9, 0.99))))


def build(cfg):
    model = MODELS.build(ConfigDict(cfg))
    model.init_weights()
    return model


def build_optim(model, cfg):
    cfg = copy.deepcopy(cfg)
    return UDAOptimWrapperConstructor(
        {k: v for k, v in cfg.items() if k != 'constructor'})(model)


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module):
    after = module.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_source_only_train_step_updates_student():
    model = build(uda_model_cfg())
    optim = build_optim(model, dict(optimizer=dict(type='SGD', lr=0.1)))
    before = snapshot(model.student)
    log_vars = model.train_step(random_uda_batch(), optim)
    assert set(log_vars) == {'loss', 'src.loss_ce', 'src.acc_seg'}
    assert torch.isfinite(log_vars['loss'])
    assert torch.allclose(log_vars['loss'], log_vars['src.loss_ce'])
    assert changed(before, model.student)


def test_source_only_loss_equals_student_decode_loss():
    """Source-only UDASegmentor == the student's own mmseg loss on the
    source batch (the target is not even forwarded)."""
    model = build(uda_model_cfg())
    batch = model.data_preprocessor(random_uda_batch(), True)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    ref = model.student.loss(batch['inputs']['source'],
                             batch['data_samples']['source'])
    assert torch.allclose(losses['src.loss_ce'], ref['decode.loss_ce'])


def test_advent_train_step_losses_and_both_optimizers_step():
    model = build(uda_model_cfg([dict(type='AdvEnt', num_classes=4)]))
    optim = build_optim(model, ADV_OPTIM)
    assert isinstance(optim, OptimWrapperDict)
    disc = model.methods[0].discriminator
    seg_ids = {id(p) for g in optim['segmentor'].param_groups
               for p in g['params']}
    assert not seg_ids & {id(p) for p in disc.parameters()}
    before_s, before_d = snapshot(model.student), snapshot(disc)
    log_vars = model.train_step(random_uda_batch(), optim)
    for key in ('advent.loss_adv', 'advent.loss_D', 'src.loss_ce'):
        assert torch.isfinite(log_vars[key]), key
    # 'loss' is the segmentor objective only; loss_D is stepped separately
    assert torch.allclose(log_vars['loss'],
                          log_vars['src.loss_ce'] + log_vars['advent.loss_adv'])
    assert changed(before_s, model.student) and changed(before_d, disc)


@pytest.mark.parametrize('frozen', ['segmentor', 'discriminator'])
def test_advent_each_side_changes_only_in_its_own_step(frozen):
    """With one optimizer's lr at 0, only the other side's parameters move:
    D gets no gradient from the segmentor objective and vice versa."""
    model = build(uda_model_cfg([dict(type='AdvEnt', num_classes=4)]))
    cfg = copy.deepcopy(ADV_OPTIM)
    cfg[frozen]['optimizer']['lr'] = 0.0
    cfg[frozen]['optimizer'].pop('momentum', None)
    optim = build_optim(model, cfg)
    disc = model.methods[0].discriminator
    before_s, before_d = snapshot(model.student), snapshot(disc)
    model.train_step(random_uda_batch(), optim)
    assert bool(changed(before_s, model.student)) == (frozen != 'segmentor')
    assert bool(changed(before_d, disc)) == (frozen != 'discriminator')


def test_gradient_routing_between_segmentor_and_discriminator():
    model = build(uda_model_cfg([dict(type='AdvEnt', num_classes=4)]))
    batch = model.data_preprocessor(random_uda_batch(), True)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    disc = model.methods[0].discriminator
    seg_params = [p for p in model.student.parameters()]
    # segmentor objective: gradients for the student, none for D
    (losses['src.loss_ce'] + losses['advent.loss_adv']).backward(
        retain_graph=True)
    assert all(p.grad is None for p in disc.parameters())
    assert all(p.grad is not None for p in seg_params)
    model.zero_grad(set_to_none=True)
    # discriminator objective: gradients for D, none for the student
    losses['advent.loss_D'].backward()
    assert all(p.grad is not None for p in disc.parameters())
    assert all(p.grad is None for p in seg_params)


def test_adversarial_target_loss_pushes_target_toward_source_label():
    """L_adv is BCE(D(I_t), 0): its value equals the softplus of D's
    logits averaged over cells (hand formula)."""
    model = build(uda_model_cfg([dict(type='AdvEnt', num_classes=4)]))
    batch = model.data_preprocessor(random_uda_batch(), True)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    method = model.methods[0]
    img = batch['inputs']['target']
    logits = model.student.decode_head(model.student.extract_feat(img))
    logits = torch.nn.functional.interpolate(
        logits, size=img.shape[-2:], mode='bilinear', align_corners=False)
    prob = torch.softmax(logits, 1)
    info = -prob * torch.log2(prob + 1e-30) / torch.log2(torch.tensor(4.))
    d_out = method.discriminator(info)
    expected = 0.001 * torch.nn.functional.softplus(d_out).mean()
    assert torch.allclose(losses['advent.loss_adv'], expected, atol=1e-6)


def test_unknown_method_type_message():
    with pytest.raises(KeyError, match=r"unknown UDA method type 'CGDA'"):
        MODELS.build(uda_model_cfg([dict(type='CGDA')]))
    with pytest.raises(TypeError, match='is not a UDA method'):
        MODELS.build(uda_model_cfg([dict(type='FCDiscriminator')]))


def test_discriminator_method_requires_second_optimizer():
    model = build(uda_model_cfg([dict(type='AdvEnt', num_classes=4)]))
    with pytest.raises(KeyError, match="'discriminator' entry"):
        build_optim(model, dict(optimizer=dict(type='SGD', lr=0.1)))


def test_out_of_range_source_label_is_reported_with_file():
    model = build(uda_model_cfg(num_classes=4))
    batch = random_uda_batch(num_classes=4)
    batch['data_samples']['source'][1].gt_sem_seg.data[0, 0, 0] = 7
    batch = model.data_preprocessor(batch, True)
    with pytest.raises(ValueError,
                       match=r'random_label.png contains class ids \[7\]'):
        model.loss(batch['inputs'], batch['data_samples'])


class NaNMethod(BaseUDAMethod):

    def loss(self, ctx):
        return {'loss_bad': ctx.student_outputs('source').logits.sum() *
                float('nan')}


def test_nan_loss_stops_with_iteration_and_name():
    MODELS.register_module(module=NaNMethod, force=True)
    model = build(uda_model_cfg([dict(type='NaNMethod')]))
    optim = build_optim(model, dict(optimizer=dict(type='SGD', lr=0.1)))
    MessageHub.get_current_instance().update_info('iter', 41)
    try:
        with pytest.raises(FloatingPointError,
                           match=r'iteration 41: nanmethod.loss_bad=nan'):
            model.train_step(random_uda_batch(), optim)
    finally:
        MessageHub.get_current_instance().update_info('iter', 0)


def test_bn_modes_agree_without_norm_and_differ_with_bn():
    batch = random_uda_batch()
    results = {}
    for with_bn in (False, True):
        for mode in ('joint', 'separate'):
            torch.manual_seed(0)
            model = build(
                uda_model_cfg([dict(type='AdvEnt', num_classes=4)],
                              with_bn=with_bn, bn_mode=mode))
            data = model.data_preprocessor(copy.deepcopy(batch), True)
            ctx = UDAContext(model, data['inputs'], data['data_samples'], 0)
            model._forward_student_domains(ctx, ['source', 'target'])
            results[with_bn, mode] = ctx.student_outputs('target').logits
    assert torch.allclose(results[False, 'joint'], results[False, 'separate'],
                          atol=1e-6)
    diff = results[True, 'joint'] - results[True, 'separate']
    assert diff.abs().max() > 1e-3


def test_decode_head_feature_capture_is_pre_dropout_and_exact():
    cfg = tiny_segmentor_cfg(dropout=0.5)
    seg = MODELS.build(cfg)
    seg.init_weights()
    seg.eval()
    x = torch.randn(2, 3, 32, 32)
    feats = seg.extract_feat(x)
    logits, feat = decode_head_forward(seg.decode_head, feats, True)
    assert torch.allclose(logits, seg.decode_head(feats))
    assert torch.allclose(seg.decode_head.conv_seg(feat), logits)
    assert feat.shape[1] == 8


def test_predict_with_student_and_uda_checkpoint_of_plain_segmentor():
    model = build(uda_model_cfg())
    model.eval()
    plain = MODELS.build(ConfigDict(tiny_segmentor_cfg()))
    plain.init_weights()
    model.load_state_dict(plain.state_dict(), strict=False)
    for k, v in plain.state_dict().items():
        assert torch.equal(model.student.state_dict()[k], v)
    batch = random_uda_batch(batch_size=1)
    data = model.data_preprocessor(
        dict(inputs=batch['inputs']['target'],
             data_samples=batch['data_samples']['target']), False)
    samples = copy.deepcopy(data['data_samples'])
    with torch.no_grad():
        out = model.predict(data['inputs'], data['data_samples'])
        ref = plain.predict(data['inputs'], samples)
    assert torch.equal(out[0].pred_sem_seg.data, ref[0].pred_sem_seg.data)


def test_init_weights_reaches_method_modules():
    """Methods' init_cfg is applied (mmengine ModuleList, not torch's)."""
    model = MODELS.build(ConfigDict(uda_model_cfg([dict(
        type='AdvEnt', num_classes=4,
        discriminator=dict(type='FCDiscriminator', ndf=8,
                           init_cfg=dict(type='Constant', val=0.25,
                                         layer='Conv2d')))])))
    model.init_weights()
    weight = model.methods[0].discriminator.classifier.weight
    assert torch.all(weight == 0.25)


def test_injected_seg_data_preprocessor_becomes_uda_version():
    """The Runner injects cfg.data_preprocessor (mmseg's SegDataPreProcessor)
    into the model config; the segmentor must still take UDA batches."""
    cfg = uda_model_cfg()
    cfg['data_preprocessor'] = dict(tiny_segmentor_cfg()['data_preprocessor'])
    model = build(cfg)
    assert type(model.data_preprocessor).__name__ == 'UDADataPreProcessor'
    optim = build_optim(model, dict(optimizer=dict(type='SGD', lr=0.1)))
    assert torch.isfinite(model.train_step(random_uda_batch(), optim)['loss'])


def test_discriminator_input_too_small_is_explained():
    disc = MODELS.build(dict(type='FCDiscriminator', in_channels=4, ndf=8))
    with pytest.raises(ValueError, match='at least 32x32, got \\(16, 16\\)'):
        disc(torch.zeros(1, 4, 16, 16))
