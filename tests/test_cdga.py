"""CDGA inside UDASegmentor: reduction to AdaptSegNet, gradient routing,
one train step with both optimizers, loss values, logging, configs."""
import copy
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config, ConfigDict
from mmengine.optim import OptimWrapperDict

import mmseg_uda.models.losses.class_balance_loss  # noqa: F401
import mmseg_uda.models.losses.cluster_orthogonality_loss  # noqa: F401
import mmseg_uda.models.losses.semantic_consistency_loss  # noqa: F401
import mmseg_uda.models.modules.grouping  # noqa: F401
import mmseg_uda.models.uda.cdga  # noqa: F401
from mmseg_uda.engine.optimizers import UDAOptimWrapperConstructor
from mmseg_uda.models.losses.group_statistics import (
    group_class_distributions, one_hot_labels)
from mmseg_uda.models.uda.cdga import CDGA
from mmseg_uda.registry import MODELS
from uda_utils import random_uda_batch, uda_model_cfg

NUM_CLASSES = 4
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def cdga_cfg(**kwargs):
    cfg = dict(
        type='CDGA', num_classes=NUM_CLASSES, num_groups=3,
        grouping=dict(type='CrossDomainGroupingNetwork', channels=16),
        discriminator=dict(type='FCDiscriminator', ndf=8))
    cfg.update(kwargs)
    return cfg


def adaptsegnet_reduction_cfg():
    """CDGA with K = 1 and every grouping loss off."""
    return cdga_cfg(num_groups=1, consistency_loss=None,
                    orthogonality_loss=None, class_balance=False)


def build(methods, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = MODELS.build(ConfigDict(uda_model_cfg(methods, **kwargs)))
    model.init_weights()
    return model


def batch(seed=0, size=32, ignore_frac=0.1):
    return random_uda_batch(batch_size=2, h=size, w=size, seed=seed,
                            num_classes=NUM_CLASSES, ignore_frac=ignore_frac)


def losses_of(model, data):
    data = model.data_preprocessor(copy.deepcopy(data), True)
    return model.loss(data['inputs'], data['data_samples'])


OPTIM = dict(
    segmentor=dict(
        optimizer=dict(type='SGD', lr=0.01, momentum=0.9),
        paramwise_cfg=dict(custom_keys={
            'decode_head': dict(lr_mult=10.0),
            'methods.0.grouping': dict(lr_mult=10.0)
        })),
    discriminator=dict(
        optimizer=dict(type='Adam', lr=1e-4, betas=(0.9, 0.99))))


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module):
    after = module.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


# ------------------------------------------------------ K = 1 == AdaptSegNet
@pytest.mark.parametrize('log_group_stats', [False, True])
def test_single_group_without_grouping_losses_is_adaptsegnet(
        log_group_stats):
    asn = build([dict(type='AdaptSegNet', num_classes=NUM_CLASSES,
                      discriminator=dict(type='FCDiscriminator', ndf=8))])
    cdga = build([dict(adaptsegnet_reduction_cfg(),
                       log_group_stats=log_group_stats)])
    # same init: AdaptSegNet's student and D copied into CDGA (its D_1)
    d_asn = asn.methods[0].discriminator
    d_cdga = cdga.methods[0].discriminator[0]
    cdga.student.load_state_dict(asn.student.state_dict())
    d_cdga.load_state_dict(d_asn.state_dict())
    data = batch()
    la, lc = losses_of(asn, data), losses_of(cdga, data)
    assert {k for k in lc if 'loss' in k} == {
        'src.loss_ce', 'cdga.loss_adv', 'cdga.loss_D'}
    for key in ('loss_adv', 'loss_D'):
        assert torch.allclose(la[f'adaptsegnet.{key}'], lc[f'cdga.{key}'],
                              rtol=1e-6, atol=1e-9), key
    assert torch.allclose(la['src.loss_ce'], lc['src.loss_ce'])

    seg_a = la['src.loss_ce'] + la['adaptsegnet.loss_adv']
    seg_c = lc['src.loss_ce'] + lc['cdga.loss_adv']
    ga = torch.autograd.grad(seg_a, list(asn.student.parameters()),
                             retain_graph=True)
    params_c = list(cdga.student.parameters()) + list(
        cdga.methods[0].grouping.parameters())
    gc = torch.autograd.grad(seg_c, params_c, retain_graph=True)
    n_student = len(ga)
    for a, c in zip(ga, gc[:n_student]):
        assert torch.allclose(a, c, rtol=1e-5, atol=1e-10)
    # A ≡ 1: the grouping network gets exactly zero gradient
    assert all(torch.count_nonzero(g) == 0 for g in gc[n_student:])
    da = torch.autograd.grad(la['adaptsegnet.loss_D'],
                             list(d_asn.parameters()))
    dc = torch.autograd.grad(lc['cdga.loss_D'], list(d_cdga.parameters()))
    for a, c in zip(da, dc):
        assert torch.allclose(a, c, rtol=1e-5, atol=1e-10)


def test_grouping_changes_the_losses_when_switched_on():
    """The reduction test above is not vacuous: with K = 3 the adversarial
    loss differs from AdaptSegNet's."""
    asn = build([dict(type='AdaptSegNet', num_classes=NUM_CLASSES,
                      discriminator=dict(type='FCDiscriminator', ndf=8))])
    cdga = build([dict(adaptsegnet_reduction_cfg(), num_groups=3)])
    data = batch()
    assert not torch.allclose(
        losses_of(asn, data)['adaptsegnet.loss_adv'],
        losses_of(cdga, data)['cdga.loss_adv'])


# ----------------------------------------------------------- gradient routing
@pytest.mark.parametrize('variant', [
    dict(),
    dict(shared_discriminator=True),
    dict(grouping_input='feature', feature_channels=8,
         source_stats='prediction'),
])
def test_gradient_routing(variant):
    model = build([cdga_cfg(**variant)])
    method = model.methods[0]
    losses = losses_of(model, batch())
    seg_keys = [k for k in losses
                if 'loss' in k and k != 'cdga.loss_D']
    assert {'cdga.loss_adv', 'cdga.loss_consist',
            'cdga.loss_orth'} <= set(seg_keys)
    disc = list(method.discriminator.parameters())
    student = list(model.student.parameters())
    grouping = list(method.grouping.parameters())
    sum(losses[k] for k in seg_keys).backward(retain_graph=True)
    assert all(p.grad is None for p in disc)
    assert all(p.grad is not None for p in student)
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in grouping)
    model.zero_grad(set_to_none=True)
    losses['cdga.loss_D'].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in disc)
    assert all(p.grad is None for p in student + grouping)


@pytest.mark.parametrize('key', ['loss_adv', 'loss_consist', 'loss_orth'])
def test_each_grouping_loss_reaches_grouping_network(key):
    model = build([cdga_cfg()])
    losses = losses_of(model, batch())
    grad = torch.autograd.grad(
        losses[f'cdga.{key}'], list(model.methods[0].grouping.parameters()))
    assert all(torch.isfinite(g).all() for g in grad)
    assert sum(g.abs().sum() for g in grad) > 0


@pytest.mark.parametrize('detach', [
    dict(), dict(detach_grouping_input=True), dict(detach_stats_prob=True),
    dict(detach_grouping_input=True, detach_stats_prob=True)
])
def test_detach_switches_cut_the_grouping_losses_off_the_segmentor(detach):
    model = build([cdga_cfg(**detach)])
    losses = losses_of(model, batch())
    student = list(model.student.parameters())
    grouping = list(model.methods[0].grouping.parameters())
    grad = torch.autograd.grad(
        losses['cdga.loss_consist'] + losses['cdga.loss_orth'],
        student + grouping, allow_unused=True, retain_graph=True)
    reaches_student = any(
        g is not None and g.abs().sum() > 0 for g in grad[:len(student)])
    assert reaches_student == (len(detach) < 2)
    assert all(g.abs().sum() > 0 for g in grad[len(student):])
    # the adversarial loss always trains the segmentor (through P^(k))
    adv = torch.autograd.grad(losses['cdga.loss_adv'], student)
    assert all(g.abs().sum() > 0 for g in adv)


# ----------------------------------------------------------------- train step
def test_train_step_steps_both_optimizers_and_logs():
    model = build([cdga_cfg()])
    method = model.methods[0]
    optim = UDAOptimWrapperConstructor(copy.deepcopy(OPTIM))(model)
    assert isinstance(optim, OptimWrapperDict)
    seg_groups = optim['segmentor'].param_groups
    grouping_ids = {id(p) for p in method.grouping.parameters()}
    disc_ids = {id(p) for p in method.discriminator.parameters()}
    seg_ids = {id(p) for g in seg_groups for p in g['params']}
    assert grouping_ids <= seg_ids and not disc_ids & seg_ids
    assert disc_ids == {id(p) for g in optim['discriminator'].param_groups
                        for p in g['params']}
    for g in seg_groups:  # C gets the x10 learning rate of new layers
        if any(id(p) in grouping_ids for p in g['params']):
            assert g['lr'] == pytest.approx(0.1)
    before = [snapshot(m) for m in (model.student, method.grouping,
                                    method.discriminator)]
    log_vars = model.train_step(batch(), optim)
    for snap, module in zip(before, (model.student, method.grouping,
                                     method.discriminator)):
        assert changed(snap, module)
    for key in ('cdga.loss_adv', 'cdga.loss_consist', 'cdga.loss_orth',
                'cdga.loss_D', 'cdga.group_entropy_src',
                'cdga.group_entropy_tgt', 'cdga.group0_tgt_class',
                'cdga.group2_src_class_share', 'cdga.group1_tgt_pixel_share'):
        assert torch.isfinite(log_vars[key]), key
    expected = log_vars['src.loss_ce'] + log_vars['cdga.loss_adv'] + \
        log_vars['cdga.loss_consist'] + log_vars['cdga.loss_orth']
    assert torch.allclose(log_vars['loss'], expected)
    entropy = log_vars['cdga.group_entropy_tgt']
    assert 0 <= entropy <= torch.log(torch.tensor(3.0)) + 1e-6
    shares = sum(log_vars[f'cdga.group{k}_tgt_pixel_share']
                 for k in range(3))
    assert torch.allclose(shares, torch.tensor(1.0), atol=1e-5)


def test_warm_up_scale_zeroes_cdga_losses_but_not_the_logs():
    model = build([cdga_cfg()])
    data = batch()
    ref = losses_of(model, data)
    model.loss_scales = {'cdga.*': 0.0}
    scaled = losses_of(model, data)
    for key, value in scaled.items():
        if key.startswith('cdga.') and 'loss' in key:
            assert value == 0, key
        else:
            assert torch.allclose(value, ref[key]), key


# --------------------------------------------------------------- loss values
def test_loss_values_match_an_independent_computation():
    model = build([cdga_cfg(class_balance=True)])
    method = model.methods[0]
    # 64x64: a 2x2 discriminator grid, so the class weights vary per cell
    data = model.data_preprocessor(copy.deepcopy(batch(size=64)), True)
    losses = model.loss(data['inputs'], data['data_samples'])
    label = torch.stack([s.gt_sem_seg.data[0]
                         for s in data['data_samples']['source']]).long()

    def maps(domain):
        img = data['inputs'][domain]
        feats = model.student.extract_feat(img)
        logits = model.student.decode_head(feats)
        up = F.interpolate(logits, img.shape[-2:], mode='bilinear',
                           align_corners=False)
        group = F.interpolate(method.grouping(logits.softmax(1)),
                              img.shape[-2:], mode='bilinear',
                              align_corners=False)
        return up.softmax(1), group.softmax(1)

    p_s, a_s = maps('source')
    p_t, a_t = maps('target')
    onehot, valid = one_hot_labels(label, NUM_CLASSES, 255)
    q_s, _ = group_class_distributions(a_s, onehot, valid)
    q_t, _ = group_class_distributions(a_t, p_t)
    consist = 0.1 * (q_s - q_t).abs().sum(1).mean()
    assert torch.allclose(losses['cdga.loss_consist'], consist, atol=1e-6)
    unit = F.normalize(q_s, dim=1), F.normalize(q_t, dim=1)
    orth = sum((u @ u.t()).sum() - 3 for u in unit) / 6 * 0.1
    assert torch.allclose(losses['cdga.loss_orth'], orth, atol=1e-5)
    # class-balanced adversarial loss, group by group
    cb = method.class_balance_loss
    adv = sum(
        cb(d(a_t[:, k:k + 1] * p_t), 0.0, p_t.argmax(1))
        for k, d in enumerate(method.discriminator)) / 3
    assert torch.allclose(losses['cdga.loss_adv'], 0.001 * adv, atol=1e-7)
    disc = 0.5 * sum(
        cb(d(a_s[:, k:k + 1] * p_s), 0.0, label) +
        cb(d(a_t[:, k:k + 1] * p_t), 1.0, p_t.argmax(1))
        for k, d in enumerate(method.discriminator)) / 3
    assert torch.allclose(losses['cdga.loss_D'], disc, atol=1e-6)


def test_shared_discriminator_input_carries_the_group_code():
    model = build([cdga_cfg(shared_discriminator=True)])
    method = model.methods[0]
    assert method.discriminator.in_channels == NUM_CLASSES + 3
    maps = dict(prob=torch.rand(2, NUM_CLASSES, 4, 4),
                assign=torch.rand(2, 3, 4, 4).softmax(1))
    inputs = method._discriminator_inputs(maps, detach=True)
    for k, x in enumerate(inputs):
        assert torch.allclose(x[:, :NUM_CLASSES],
                              maps['assign'][:, k:k + 1] * maps['prob'])
        code = x[:, NUM_CLASSES:]
        assert torch.equal(code.argmax(1), torch.full((2, 4, 4), k))
        assert torch.equal(code.sum(1), torch.ones(2, 4, 4))


def test_debug_group_maps_are_recorded_at_image_size():
    model = build([cdga_cfg(upsample_to_input=False)])
    model.debug_enabled = True
    # D on the stride-4 maps of the tiny model needs >= 32x32 of them
    losses_of(model, batch(size=128))
    for domain in ('source', 'target'):
        groups = model.debug_maps[f'{domain}_groups']
        assert groups.shape == (2, 128, 128)
        assert groups.min() >= 0 and groups.max() < 3


# --------------------------------------------------------------- bad configs
def test_bad_configs_are_reported():
    with pytest.raises(ValueError, match='grouping_input'):
        CDGA(num_classes=4, grouping_input='logits')
    with pytest.raises(ValueError, match='feature_channels'):
        CDGA(num_classes=4, grouping_input='feature')
    with pytest.raises(ValueError, match='num_groups'):
        CDGA(num_classes=4, num_groups=0)
    with pytest.raises(ValueError, match='source_stats'):
        CDGA(num_classes=4, source_stats='labels')
    with pytest.raises(ValueError, match='grouped_discriminators'):
        CDGA(num_classes=4, shared_discriminator=True,
             grouped_discriminators=True)
    model = build([cdga_cfg(grouping_input='feature', feature_channels=5)])
    with pytest.raises(ValueError, match='feature_channels=5'):
        losses_of(model, batch(size=32))


# -------------------------------------------------------------------- configs
@pytest.mark.parametrize('name', ['gta2cs', 'synthia2cs'])
def test_config_builds_through_the_registry(name):
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'cdga', f'{name}.py'))
    model_cfg = copy.deepcopy(cfg.model)
    seg = model_cfg.segmentor
    seg.backbone.init_cfg = None
    seg.backbone.norm_cfg = dict(type='BN', requires_grad=False)
    model = MODELS.build(model_cfg)
    method = model.methods[0]
    assert isinstance(method, CDGA)
    assert method.num_groups == 8 and len(method.discriminator) == 8
    assert method.lambda_adv == 0.001
    assert method.consistency_loss.loss_weight == 0.1
    assert method.orthogonality_loss.loss_weight == 0.1
    assert method.class_balance
    keys = cfg.optim_wrapper.segmentor.paramwise_cfg.custom_keys
    assert keys['methods.0.grouping'].lr_mult == 10.0
    names = [n for n, _ in model.named_parameters()]
    assert any(n.startswith('methods.0.grouping.') for n in names)
    hooks = {h['type']: h for h in cfg.custom_hooks}
    assert hooks['LossWeightScheduleHook']['schedules']['cdga.*'][
        'type'] == 'step'


# ------------------------------------------- one target forward for G and D
def step_gradients(model, data):
    """Losses and gradients as UDASegmentor.uda_train_step produces them:
    the segmentor objective back-propagated (graph freed), then loss_D."""
    losses = losses_of(model, data)
    seg = sum(v for k, v in losses.items()
              if 'loss' in k and k != 'cdga.loss_D')
    params = dict(model.named_parameters())
    model.zero_grad(set_to_none=True)
    seg.backward()
    g_seg = {k: p.grad.clone() for k, p in params.items()
             if p.grad is not None}
    model.zero_grad(set_to_none=True)
    losses['cdga.loss_D'].backward()
    g_disc = {k: p.grad.clone() for k, p in params.items()
              if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return {k: v.detach() for k, v in losses.items()}, g_seg, g_disc


def assert_same_step(ref, new, rtol):
    for part_ref, part_new in zip(ref, new):
        assert part_ref.keys() == part_new.keys()
        for key in part_ref:
            a, b = part_ref[key], part_new[key]
            scale = a.abs().max().clamp_min(1e-30)
            assert (a - b).abs().max() <= rtol * scale, key


def count_discriminator_calls(model):
    calls = []
    discs = model.methods[0].discriminator
    for d in (discs if isinstance(discs, torch.nn.ModuleList) else [discs]):
        d.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize('variant', [
    dict(),
    dict(shared_discriminator=True),
    dict(class_balance='loss'),
])
def test_dual_target_pass_equals_two_autograd_passes(variant):
    """Losses and both objectives' gradients (every parameter) equal the
    previous computation, where the target went through D twice."""
    data = batch(size=64)
    ref_model = build([cdga_cfg(reuse_target_forward=False, **variant)])
    new_model = build([cdga_cfg(reuse_target_forward=True, **variant)])
    ref_calls = count_discriminator_calls(ref_model)
    new_calls = count_discriminator_calls(new_model)
    ref = step_gradients(ref_model, data)
    new = step_gradients(new_model, data)
    assert_same_step(ref, new, rtol=1e-6)
    # the generator step's D gets no gradient, loss_D reaches D only
    assert not any(k.startswith('methods.0.discriminator') for k in new[1])
    assert all(k.startswith('methods.0.discriminator') for k in new[2])
    # not vacuous: 3 D calls per D before, 1 (source only) now
    n_d = 1 if variant.get('shared_discriminator') else 3
    assert len(ref_calls) == 3 * n_d and len(new_calls) == n_d


def test_grouped_discriminators_match_the_per_group_loop():
    """One grouped convolution per layer for the K discriminators: same
    losses and gradients up to summation order (oneDNN's grouped kernels
    add the pixels in another order: ≈3e-5 relative on the first layer's
    weight gradient at 64x64), same parameters and state_dict keys."""
    data = batch(size=64)
    ref_model = build([cdga_cfg(reuse_target_forward=False)])
    for reuse in (False, True):
        model = build([cdga_cfg(grouped_discriminators=True,
                                reuse_target_forward=reuse)])
        assert model.state_dict().keys() == ref_model.state_dict().keys()
        model.load_state_dict(ref_model.state_dict())
        assert_same_step(step_gradients(ref_model, data),
                         step_gradients(model, data), rtol=1e-4)


def test_autocast_keeps_the_two_passes():
    model = build([cdga_cfg()])
    method = model.methods[0]
    x = torch.rand(1, NUM_CLASSES, 32, 32)
    assert method._reuses_target_forward(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert not method._reuses_target_forward(x)


# ------------------------------------------------- class-balance variants
def test_class_balance_switch_selects_the_variant():
    data = batch(size=64)
    losses = {}
    for mode in ('reweight', 'loss', None):
        model = build([cdga_cfg(class_balance=mode)])
        method = model.methods[0]
        assert (method.class_balance_loss is not None) == (mode == 'reweight')
        assert (method.class_equivalence_loss is not None) == (mode == 'loss')
        losses[mode] = losses_of(model, data)
    assert 'cdga.loss_class_equiv' in losses['loss']
    assert 'cdga.loss_class_equiv' not in losses['reweight']
    assert 'cdga.loss_class_equiv' not in losses[None]
    # 'loss' adds a term and leaves the adversarial BCE plain ...
    for key in ('cdga.loss_adv', 'cdga.loss_D'):
        assert torch.equal(losses['loss'][key], losses[None][key])
        # ... 'reweight' changes it
        assert not torch.allclose(losses['reweight'][key], losses[None][key])
    # booleans of the earlier configs
    assert CDGA(num_classes=4, class_balance=True).class_balance == \
        'reweight'
    assert CDGA(num_classes=4, class_balance=False).class_balance is None
    with pytest.raises(ValueError, match="'reweight'"):
        CDGA(num_classes=4, class_balance='balanced')


def test_class_equivalence_term_value_and_routing():
    """loss_class_equiv equals GroupClassEquivalenceLoss on the group maps
    recomputed outside CDGA, and trains C and the segmentor."""
    model = build([cdga_cfg(class_balance='loss')])
    method = model.methods[0]
    data = model.data_preprocessor(copy.deepcopy(batch(size=64)), True)
    losses = model.loss(data['inputs'], data['data_samples'])
    label = torch.stack([s.gt_sem_seg.data[0]
                         for s in data['data_samples']['source']]).long()

    def maps(domain):
        img = data['inputs'][domain]
        logits = model.student.decode_head(model.student.extract_feat(img))
        up = F.interpolate(logits, img.shape[-2:], mode='bilinear',
                           align_corners=False)
        group = F.interpolate(method.grouping(logits.softmax(1)),
                              img.shape[-2:], mode='bilinear',
                              align_corners=False)
        return up.softmax(1), group.softmax(1)

    _, a_s = maps('source')
    p_t, a_t = maps('target')
    onehot, valid = one_hot_labels(label, NUM_CLASSES, 255)
    expected = method.class_equivalence_loss(a_s, onehot, a_t, p_t, valid)
    assert method.class_equivalence_loss.loss_weight == 0.1
    value = losses['cdga.loss_class_equiv']
    assert value > 0 and torch.allclose(value, expected, atol=1e-6)
    student = list(model.student.parameters())
    grouping = list(method.grouping.parameters())
    grad = torch.autograd.grad(value, student + grouping)
    assert sum(g.abs().sum() for g in grad[:len(student)]) > 0
    assert all(g.abs().sum() > 0 for g in grad[len(student):])


# ------------------------- shared discriminator + class_balance='loss': resume
def test_variant_trains_and_resumes_exactly(tmp_path):
    """Both new variants in one Runner run (4 iterations, or 2 + resume 2):
    weights, the shared D, and both optimizers' states equal."""
    variant = dict(shared_discriminator=True, class_balance='loss')
    from e2e_utils import (assert_resume_exact, make_tiny_uda_data,
                           tiny_runner_cfg)
    make_tiny_uda_data(str(tmp_path / 'data'))
    method = dict(type='CDGA', num_classes=19, num_groups=2,
                  discriminator=dict(type='FCDiscriminator', ndf=8),
                  grouping=dict(type='CrossDomainGroupingNetwork',
                                channels=8), **variant)
    optim = dict(
        constructor='UDAOptimWrapperConstructor',
        segmentor=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        discriminator=dict(optimizer=dict(type='Adam', lr=1e-4,
                                          betas=(0.9, 0.99))))
    cfg = tiny_runner_cfg(str(tmp_path / 'data'), str(tmp_path / 'work'),
                          max_iters=4, methods=[method], optim=optim)
    state = assert_resume_exact(cfg, 4, tmp_path / 'work')
    prefix = 'model.methods.0.discriminator.'
    disc_keys = [k for k in state if k.startswith(prefix)]
    # one D: no per-group index in its keys, L + K input channels
    assert f'{prefix}features.0.weight' in disc_keys
    assert state[f'{prefix}features.0.weight'].shape[1] == 19 + 2
    assert any(k.startswith('optim.discriminator.state') for k in state)
