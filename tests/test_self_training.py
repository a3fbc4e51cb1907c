"""SelfTraining (DACS/DAFormer): ClassMix, pseudo-weights, mixed-image
loss, feature distance, strong augmentation, teacher/frozen-encoder
handling and the EMA teacher semantics, on hand-made inputs and the tiny
CPU model."""
import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from kornia.augmentation import ColorJiggle
from mmengine.config import ConfigDict
from mmengine.logging import MessageHub, MMLogger
from mmengine.structures import PixelData

import mmseg_uda.models.uda.self_training  # noqa: F401 (registers)
from mmseg_uda.engine.hooks import EMATeacherHook, ema_momentum, ema_update
from mmseg_uda.engine.optimizers import UDAOptimWrapperConstructor
from mmseg_uda.models.uda import UDAContext
from mmseg_uda.models.uda.dacs_transforms import (
    blur_kernel_size, class_mix_masks, color_jiggle, downscale_label_ratio,
    gaussian_blur, global_label_values, iteration_rng, num_mixed_classes,
    one_mix, sample_rng)
from mmseg_uda.models.uda.self_training import (confident_fraction,
                                                pseudo_weight_map,
                                                teacher_pseudo_labels,
                                                weighted_pixel_ce)
from mmseg_uda.registry import MODELS
from uda_utils import random_uda_batch, uda_model_cfg

TINY_ENCODER = dict(type='TinyConvBackbone', channels=(8, 16))


def st_cfg(**kwargs):
    cfg = dict(
        type='SelfTraining',
        pseudo_threshold=0.3,
        pseudo_weight_ignore_top=2,
        pseudo_weight_ignore_bottom=3,
        imnet_feature_dist_classes=[1, 2],
        imnet_feature_dist_encoder=TINY_ENCODER,
        seed=3)
    cfg.update(kwargs)
    return cfg


def build(method_cfg=None, init_teacher=True, **model_kwargs):
    torch.manual_seed(0)
    model = MODELS.build(
        ConfigDict(uda_model_cfg([method_cfg or st_cfg()], **model_kwargs)))
    model.init_weights()
    if init_teacher:
        model.teacher.load_state_dict(model.student.state_dict())
        model.teacher_initialized.fill_(1)
    return model


def blocky_labels(batch, seed=0, cell=4, num_classes=4):
    """Replace the source labels by piecewise-constant cell×cell blocks (so
    downscaled labels are well defined), with a few ignored blocks."""
    g = torch.Generator().manual_seed(seed)
    for sample in batch['data_samples']['source']:
        h, w = sample.gt_sem_seg.data.shape[-2:]
        coarse = torch.randint(0, num_classes, (h // cell, w // cell),
                               generator=g)
        coarse[torch.rand(coarse.shape, generator=g) < 0.1] = 255
        label = coarse.repeat_interleave(cell, 0).repeat_interleave(cell, 1)
        sample.gt_sem_seg = PixelData(data=label[None])
    return batch


def make_ctx(model, batch, iteration=0, debug=True):
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    return UDAContext(model, data['inputs'], data['data_samples'], iteration,
                      debug=debug)


def sgd(model, lr=0.1):
    return UDAOptimWrapperConstructor(
        dict(optimizer=dict(type='SGD', lr=lr)))(model)


def fake_runner(model, it=0):
    return SimpleNamespace(
        model=model, iter=it, logger=MMLogger.get_current_instance(),
        message_hub=MessageHub.get_current_instance())


# ------------------------------------------------------------------ ClassMix
def test_num_mixed_classes_is_ceil_half():
    assert [num_mixed_classes(n) for n in range(1, 7)] == [1, 1, 2, 2, 3, 3]


def test_class_mix_masks_batch_candidates_quirk():
    """Candidates are the classes of the whole batch (255 included), so an
    image can get classes it does not contain (empty paste) and its ignored
    pixels can be pasted."""
    labels = torch.tensor([[[0, 0, 1], [1, 1, 0]],
                           [[2, 3, 255], [3, 2, 2]]])
    candidates = torch.unique(labels)
    assert candidates.tolist() == [0, 1, 2, 3, 255]

    def draw(seed):
        return np.random.RandomState(seed).choice(5, 3, replace=False)

    # a seed whose choice for image 0 avoids its classes {0, 1}, and one
    # whose choice for image 1 contains 255
    s0 = next(s for s in range(1000) if not set(draw(s)) & {0, 1})
    s1 = next(s for s in range(1000) if 4 in set(draw(s)))
    rngs = [np.random.RandomState(s0), np.random.RandomState(s1)]
    masks = class_mix_masks(labels, rngs, candidates)
    for i, seed in enumerate((s0, s1)):
        chosen = {candidates[j].item() for j in draw(seed)}
        expected = torch.tensor([[v in chosen for v in row]
                                 for row in labels[i].tolist()])
        assert torch.equal(masks[i], expected)
    assert not masks[0].any()  # chosen classes absent from image 0
    assert masks[1][0, 2]  # the ignored pixel is pasted


def test_class_mix_masks_per_image_candidates():
    labels = torch.tensor([[[0, 0, 1], [1, 1, 0]],
                           [[2, 3, 3], [3, 2, 2]]])
    masks = class_mix_masks(labels, [np.random.RandomState(s)
                                     for s in (0, 1)], None)
    for i in range(2):
        classes = torch.unique(labels[i])
        chosen = classes[np.random.RandomState(i).choice(2, 1,
                                                         replace=False)]
        assert torch.equal(masks[i], labels[i] == chosen)
        assert masks[i].any() and not masks[i].all()


def test_global_label_values_is_unique_without_process_group():
    labels = torch.tensor([[3, 255], [0, 3]])
    assert torch.equal(global_label_values(labels, 256), torch.unique(labels))
    with pytest.raises(ValueError, match='Label values'):
        global_label_values(torch.tensor([300]), 256)


def test_one_mix_images_labels_and_weights():
    mask = torch.tensor([[[True, False], [False, True]]])
    src = torch.arange(8.).view(1, 2, 2, 2)
    tgt = -torch.arange(8.).view(1, 2, 2, 2)
    mixed = one_mix(mask, src, tgt)
    for c in range(2):
        for y in range(2):
            for x in range(2):
                ref = src if mask[0, y, x] else tgt
                assert mixed[0, c, y, x] == ref[0, c, y, x]
    assert one_mix(mask, torch.tensor([[[1, 2], [3, 4]]]),
                   torch.tensor([[[9, 9], [9, 9]]])).tolist() == \
        [[[1, 9], [9, 4]]]
    weight = one_mix(mask, torch.ones(1, 2, 2), torch.full((1, 2, 2), 0.3))
    assert torch.allclose(weight, torch.tensor([[[1.0, 0.3], [0.3, 1.0]]]))


def test_sample_generators_depend_on_seed_iteration_and_index():
    draw = [sample_rng(7, 5, 1).uniform() for _ in range(2)]
    assert draw[0] == draw[1]
    others = {sample_rng(8, 5, 1).uniform(), sample_rng(7, 6, 1).uniform(),
              sample_rng(7, 5, 2).uniform(), iteration_rng(7, 5).uniform()}
    assert draw[0] not in others and len(others) == 4


# ---------------------------------------------------------- pseudo-weights
def test_confident_fraction_and_ignored_rows():
    prob = torch.full((2, 6, 4), 0.5)
    prob[0, :3] = 0.968  # 12 of 24, the threshold itself counts
    prob[1, 0, :] = 0.99
    prob[1, 1, :2] = 0.97  # 6 of 24
    per_image = confident_fraction(prob, 0.968, 'image')
    assert per_image.tolist() == pytest.approx([0.5, 0.25])
    batch = confident_fraction(prob, 0.968, 'batch')
    assert batch.tolist() == pytest.approx([18 / 48, 18 / 48])
    weight = pseudo_weight_map(per_image, prob.shape, 1, 2)
    for b, frac in enumerate((0.5, 0.25)):
        for row in range(6):
            ref = 0.0 if row < 1 or row >= 4 else frac
            assert torch.allclose(weight[b, row], torch.full((4, ), ref))


def test_pseudo_labels_are_teacher_softmax_at_image_size():
    model = build()
    ctx = make_ctx(model, random_uda_batch(h=32, w=32))
    label, prob = teacher_pseudo_labels(ctx)
    with torch.no_grad():
        logits = model.teacher.encode_decode(ctx.img('target'),
                                             ctx.img_metas('target'))
    ref_prob, ref_label = torch.softmax(logits, 1).max(1)
    assert label.shape == (2, 32, 32)
    assert torch.equal(label, ref_label)
    assert torch.allclose(prob, ref_prob, atol=1e-6)
    assert teacher_pseudo_labels(ctx)[0] is label  # cached


# --------------------------------------------------------------- mix loss
def test_weighted_pixel_ce_matches_loop():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=g)
    label = torch.randint(0, 3, (2, 4, 5), generator=g)
    label[0, 0, :2] = 255
    weight = torch.rand(2, 4, 5, generator=g)
    total = 0.0
    for b in range(2):
        for y in range(4):
            for x in range(5):
                if label[b, y, x] == 255:
                    continue
                logp = torch.log_softmax(logits[b, :, y, x], 0)
                total += -logp[label[b, y, x]].item() * weight[b, y, x].item()
    ref = total / (2 * 4 * 5)
    assert weighted_pixel_ce(logits, label, weight, 255).item() == \
        pytest.approx(ref, rel=1e-5)


def test_loss_mix_end_to_end_against_hand_computation():
    """loss_mix from SelfTraining.loss equals a hand computation on the
    mixed image it fed to the student: label = source where pasted, teacher
    argmax elsewhere; weight = 1 where pasted, the confident fraction
    elsewhere, 0 on the ignored rows."""
    model = build(st_cfg(imnet_feature_dist_lambda=0.0,
                         pseudo_weight_scope='image',
                         color_jitter_probability=1.0, blur=False))
    with torch.no_grad():  # a teacher confident on part of the pixels
        model.teacher.decode_head.conv_seg.weight.mul_(200.0)
    batch = blocky_labels(random_uda_batch(h=32, w=32))
    ctx = make_ctx(model, batch)
    seen = {}
    forward = ctx.forward_student

    def spy(img, with_feat=True):
        seen['img'] = img
        seen['out'] = forward(img, with_feat)
        return seen['out']

    ctx.forward_student = spy
    losses = model.methods[0].loss(ctx)
    mask = ctx.debug_maps['mix_mask'].bool()
    pseudo, prob = teacher_pseudo_labels(ctx)
    src_label = ctx.src_label
    logits = F.interpolate(seen['out'].logits, size=(32, 32),
                           mode='bilinear', align_corners=False)
    total = 0.0
    fracs = [(prob[b] >= 0.3).float().mean().item() for b in range(2)]
    assert all(0.05 < f < 0.95 for f in fracs) and fracs[0] != fracs[1]
    for b in range(2):
        frac = fracs[b]
        for y in range(32):
            for x in range(32):
                if mask[b, y, x]:
                    lbl, w = src_label[b, y, x].item(), 1.0
                else:
                    lbl = pseudo[b, y, x].item()
                    w = 0.0 if y < 2 or y >= 29 else frac
                if lbl == 255:
                    continue
                logp = torch.log_softmax(logits[b, :, y, x], 0)[lbl].item()
                total -= logp * w
    assert losses['loss_mix'].item() == pytest.approx(total / (2 * 32 * 32),
                                                      rel=1e-4)
    assert torch.equal(ctx.debug_maps['mixed_label'],
                       torch.where(mask, src_label, pseudo))
    # without jitter/blur the mixed image is source where pasted, target
    # elsewhere
    expanded = mask[:, None].expand_as(seen['img'])
    assert torch.equal(seen['img'],
                       torch.where(expanded, ctx.img('source'),
                                   ctx.img('target')))
    assert 0 < mask.float().mean() < 1
    for key in ('pseudo_label', 'mixed_image', 'mixed_label'):
        assert key in ctx.debug_maps


# -------------------------------------------------------- feature distance
def test_downscale_label_ratio_matches_loop():
    g = torch.Generator().manual_seed(1)
    label = torch.randint(0, 3, (2, 8, 8), generator=g)
    label[0, :4, :4] = 1
    label[0, :4, :1] = 255  # 4/16 void -> majority 12/16 = 0.75 kept
    label[1, 4:, 4:] = 255
    out = downscale_label_ratio(label, 4, 0.75, 3, 255)
    for b in range(2):
        for i in range(2):
            for j in range(2):
                block = label[b, 4 * i:4 * i + 4, 4 * j:4 * j + 4].flatten()
                values, counts = torch.unique(block, return_counts=True)
                best = counts.argmax()
                ref = values[best].item() \
                    if counts[best] / 16 >= 0.75 else 255
                assert out[b, i, j].item() == ref
    assert out[0, 0, 0] == 1 and out[1, 1, 1] == 255


def perturbed_fd_model(**kwargs):
    model = build(st_cfg(imnet_feature_dist_lambda=0.5, **kwargs))
    method = model.methods[0]
    method.imnet_encoder.load_state_dict(model.student.backbone.state_dict())
    method.imnet_initialized.fill_(1)
    with torch.no_grad():
        for p in model.student.backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model, method


def test_feature_distance_only_on_thing_cells():
    model, method = perturbed_fd_model()
    batch = blocky_labels(random_uda_batch(h=32, w=32), seed=2)
    ctx = make_ctx(model, batch)
    loss, logs = method.feature_distance(ctx)
    feat_s = ctx.student_outputs('source').backbone[-1]
    with torch.no_grad():
        feat_i = method.imnet_encoder(ctx.img('source'))[-1]
    cells = downscale_label_ratio(ctx.src_label, 4, 0.75, 4, 255)
    dists = []
    for b in range(2):
        for y in range(8):
            for x in range(8):
                if cells[b, y, x].item() in (1, 2):
                    diff = feat_s[b, :, y, x] - feat_i[b, :, y, x]
                    dists.append(diff.pow(2).sum().sqrt().item())
    assert len(dists) > 10
    assert loss.item() == pytest.approx(0.5 * np.mean(dists), rel=1e-5)
    assert logs['fd_cell_ratio'].item() == pytest.approx(len(dists) / 128)
    grad, = torch.autograd.grad(loss, feat_s)
    thing = torch.isin(cells, torch.tensor([1, 2]))
    assert (grad.abs().sum(1)[~thing] == 0).all()
    assert (grad.abs().sum(1)[thing] > 0).all()


def test_feature_distance_is_zero_without_thing_classes():
    model, method = perturbed_fd_model()
    batch = random_uda_batch(h=32, w=32)
    for sample in batch['data_samples']['source']:
        sample.gt_sem_seg = PixelData(
            data=torch.where(torch.rand(1, 32, 32) < 0.5, 0, 3))
    ctx = make_ctx(model, batch)
    loss, logs = method.feature_distance(ctx)
    assert loss.item() == 0.0 and logs['fd_cell_ratio'].item() == 0.0
    loss.backward()
    grads = [p.grad for p in model.student.backbone.parameters()]
    assert all(g is None or torch.isfinite(g).all() for g in grads)


def test_feature_distance_on_all_cells_when_classes_none():
    model, method = perturbed_fd_model(imnet_feature_dist_classes=None,
                                       imnet_feature_dist_scale_min_ratio=None)
    ctx = make_ctx(model, random_uda_batch(h=32, w=32))
    loss, _ = method.feature_distance(ctx)
    feat_s = ctx.student_outputs('source').backbone[-1]
    with torch.no_grad():
        feat_i = method.imnet_encoder(ctx.img('source'))[-1]
    ref = (feat_s - feat_i).norm(dim=1).mean()
    assert loss.item() == pytest.approx(0.5 * ref.item(), rel=1e-5)


def test_imnet_encoder_copied_once_from_student_and_kept_on_reload():
    model = build()
    method = model.methods[0]
    assert int(method.imnet_initialized) == 0
    student0 = copy.deepcopy(model.student.backbone.state_dict())
    optim = sgd(model)
    batch = blocky_labels(random_uda_batch(h=32, w=32))
    model.train_step(copy.deepcopy(batch), optim)
    assert int(method.imnet_initialized) == 1
    for k, v in method.imnet_encoder.state_dict().items():
        assert torch.equal(v, student0[k]), k  # the iteration-0 student
    model.train_step(copy.deepcopy(batch), optim)
    for k, v in method.imnet_encoder.state_dict().items():
        assert torch.equal(v, student0[k]), k  # never re-copied
    assert any(not torch.equal(v, student0[k])
               for k, v in model.student.backbone.state_dict().items())
    # a model restored from a checkpoint keeps the checkpointed encoder
    state = model.state_dict()
    restored = build()
    restored.load_state_dict(state)
    restored.train_step(copy.deepcopy(batch), sgd(restored))
    for k, v in restored.methods[0].imnet_encoder.state_dict().items():
        assert torch.equal(v, student0[k]), k


def test_imnet_encoder_from_pretrained_checkpoint(tmp_path):
    torch.manual_seed(5)
    encoder = MODELS.build(dict(TINY_ENCODER))
    ckpt = tmp_path / 'imnet.pth'
    torch.save(encoder.state_dict(), ckpt)
    cfg = st_cfg(imnet_feature_dist_init='pretrained',
                 imnet_feature_dist_encoder=dict(
                     TINY_ENCODER,
                     init_cfg=dict(type='Pretrained', checkpoint=str(ckpt))))
    model = build(cfg)
    method = model.methods[0]
    assert int(method.imnet_initialized) == 0
    model.train_step(blocky_labels(random_uda_batch(h=32, w=32)), sgd(model))
    assert int(method.imnet_initialized) == 1
    for k, v in method.imnet_encoder.state_dict().items():
        assert torch.equal(v, encoder.state_dict()[k]), k
    with pytest.raises(ValueError, match='Pretrained'):
        build(st_cfg(imnet_feature_dist_init='pretrained'))


# ---------------------------------------------------- strong augmentation
def test_blur_kernel_size_is_daformer_odd_tenth():
    for length in (8, 10, 11, 32, 64, 512, 1024):
        k = int(np.floor(np.ceil(0.1 * length) - 0.5 +
                         np.ceil(0.1 * length) % 2))
        assert blur_kernel_size(length) == k
        assert k % 2 == 1
    assert blur_kernel_size(512) == 51 and blur_kernel_size(1024) == 103


@pytest.mark.parametrize('bgr_to_rgb', [True, False])
def test_strong_augment_is_normalisation_aware(bgr_to_rgb):
    kwargs = dict(color_jitter_strength=0.0)
    model = build(st_cfg(**kwargs))
    model.data_preprocessor.channel_conversion = bgr_to_rgb
    method = model.methods[0]
    ctx = make_ctx(model, random_uda_batch(h=32, w=32))
    img = ctx.img('source')
    seeds = [(11, 1e-3), (12, 1e-3)]
    # identity parameters: zero jitter strength, tiny blur sigma
    out = method.strong_augment(ctx, img, 1.0, 1.0, seeds)
    assert torch.allclose(out, img, atol=1e-4)
    # real jitter = ColorJiggle on de-normalised [0, 1] RGB, re-normalised
    method.color_jitter_strength = 0.2
    out = method.strong_augment(ctx, img, 1.0, 0.0, seeds)
    pixels = ctx.denormalize(img) / 255
    if not bgr_to_rgb:
        pixels = pixels.flip(1)
    ref = []
    for i, (seed, _) in enumerate(seeds):
        jiggle = ColorJiggle(0.2, 0.2, 0.2, 0.2, p=1.0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            params = jiggle.forward_parameters((1, 3, 32, 32))
        ref.append(jiggle(pixels[i:i + 1], params=params))
    ref = torch.cat(ref)
    if not bgr_to_rgb:
        ref = ref.flip(1)
    assert torch.allclose(out, ctx.renormalize(ref * 255), atol=1e-4)
    assert not torch.allclose(out, img, atol=1e-2)
    # jitter applied only when the draw exceeds p (DAFormer: prob 1 - p)
    assert torch.equal(method.strong_augment(ctx, img, 0.2, 0.0, seeds), img)
    # blur: kornia Gaussian on the normalised image, per-image sigma
    blurred = method.strong_augment(ctx, img, 0.0, 0.51, [(0, 0.9), (0, 0.2)])
    assert torch.allclose(blurred, gaussian_blur(img, [0.9, 0.2]))
    assert not torch.allclose(blurred, img, atol=1e-2)


def test_color_jiggle_seeds_are_per_image_and_reproducible():
    img = torch.rand(2, 3, 16, 16)
    a = color_jiggle(img, 0.2, [1, 2])
    b = color_jiggle(img, 0.2, [1, 2])
    c = color_jiggle(img, 0.2, [1, 3])
    assert torch.equal(a, b)
    assert torch.equal(a[0], c[0]) and not torch.allclose(a[1], c[1])
    state = torch.get_rng_state()
    color_jiggle(img, 0.2, [1, 2])
    assert torch.equal(state, torch.get_rng_state())  # global RNG untouched


# ------------------------------------------------ teacher / frozen / step
def test_train_step_routes_gradients_to_student_only():
    model = build()
    optim = sgd(model)
    in_optim = {id(p) for g in optim.param_groups for p in g['params']}
    method = model.methods[0]
    frozen = list(model.teacher.parameters()) + \
        list(method.imnet_encoder.parameters())
    assert not in_optim & {id(p) for p in frozen}
    assert in_optim == {id(p) for p in model.student.parameters()}
    teacher0 = copy.deepcopy(model.teacher.state_dict())
    student0 = copy.deepcopy(model.student.state_dict())
    log_vars = model.train_step(blocky_labels(random_uda_batch(h=32, w=32)),
                                optim)
    for key in ('src.loss_ce', 'selftraining.loss_mix',
                'selftraining.loss_fd', 'selftraining.pseudo_conf_ratio',
                'selftraining.mix_acc_seg'):
        assert torch.isfinite(log_vars[key]), key
    assert torch.allclose(
        log_vars['loss'], log_vars['src.loss_ce'] +
        log_vars['selftraining.loss_mix'] + log_vars['selftraining.loss_fd'])
    assert all(p.grad is None for p in frozen)
    assert all(torch.equal(v, teacher0[k])
               for k, v in model.teacher.state_dict().items())
    assert any(not torch.equal(v, student0[k])
               for k, v in model.student.state_dict().items())
    assert not method.imnet_encoder.training
    model.train()
    assert not method.imnet_encoder.training


def test_train_step_with_ema_teacher_hook():
    """before_train copies the student into the teacher; after the first
    iteration (runner.iter 0) the teacher is the 0.5/0.5 average of its old
    and the updated student's parameters (a = 1 - 1/2)."""
    model = build(init_teacher=False)
    hook = EMATeacherHook(alpha=0.999)
    hook.before_train(fake_runner(model))
    assert int(model.teacher_initialized) == 1
    teacher0 = [p.detach().clone() for p in model.teacher.parameters()]
    model.train_step(blocky_labels(random_uda_batch(h=32, w=32)), sgd(model))
    hook.after_train_iter(fake_runner(model, it=0), 0)
    for t, t0, s in zip(model.teacher.parameters(), teacher0,
                        model.student.parameters()):
        assert torch.allclose(t, 0.5 * t0 + 0.5 * s, atol=1e-6)


@pytest.mark.parametrize('runner_iter,momentum', [(0, 0.5), (1, 2 / 3),
                                                   (10, 1 - 1 / 12)])
def test_ema_update_values(runner_iter, momentum):
    assert ema_momentum(runner_iter + 1, 0.999) == pytest.approx(momentum)
    model = build()
    with torch.no_grad():
        for t, s in zip(model.teacher.parameters(),
                        model.student.parameters()):
            t.fill_(1.0)
            s.fill_(3.0)
    EMATeacherHook(alpha=0.999).after_train_iter(
        fake_runner(model, it=runner_iter), 0)
    ref = momentum * 1.0 + (1 - momentum) * 3.0
    for t in model.teacher.parameters():
        assert torch.allclose(t, torch.full_like(t, ref))
    # ema_update itself
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    ref = [momentum * pa + (1 - momentum) * pb
           for pa, pb in zip(a.parameters(), b.parameters())]
    ema_update(a, b, momentum)
    for pa, r in zip(a.parameters(), ref):
        assert torch.allclose(pa, r)


def test_teacher_from_checkpoint_is_not_reinitialised():
    source = build()
    with torch.no_grad():
        for p in source.teacher.parameters():
            p.fill_(0.25)
    state = source.state_dict()
    assert int(state['teacher_initialized']) == 1
    restored = build(init_teacher=False)
    restored.load_state_dict(state)
    EMATeacherHook(alpha=0.999).before_train(fake_runner(restored))
    for p in restored.teacher.parameters():
        assert torch.all(p == 0.25)
    assert int(restored.methods[0].rng_seed) == 3


# ---------------------------------------------------------------- errors
def test_configuration_errors_are_explicit():
    with pytest.raises(ValueError, match='imnet_feature_dist_encoder'):
        MODELS.build(dict(type='SelfTraining'))
    with pytest.raises(ValueError, match='pseudo_weight_scope'):
        MODELS.build(dict(type='SelfTraining', imnet_feature_dist_lambda=0,
                          pseudo_weight_scope='pixel'))
    with pytest.raises(ValueError, match='class_mix_candidates'):
        MODELS.build(dict(type='SelfTraining', imnet_feature_dist_lambda=0,
                          class_mix_candidates='all'))
    model = build()
    batch = random_uda_batch(h=32, w=32)
    batch['inputs']['target'] = [
        torch.zeros(3, 24, 32, dtype=torch.uint8)
        for _ in batch['inputs']['target']
    ]
    with pytest.raises(ValueError, match='same size'):
        model.train_step(batch, sgd(model))
