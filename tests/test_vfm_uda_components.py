"""VFM-UDA's components on top of SelfTraining and MIC: the lightweight ViT
head, token masking in ``MaskedImageConsistency`` and flip-averaged
pseudo-labels in ``SelfTraining``, against the official code's outputs on
fixed inputs, brute-force references, gradients and negative controls.

``fixtures/vfm_uda_reference.npz`` holds outputs of the official code,
``tue-mps/vfm-uda`` commit e154d8f, run once outside this repository (the
arrays, files and functions are listed in
``fixtures/vfm_uda_reference.md``):

* ``head_*``: ``models/vit_variants/vit_lightweight_head.py::
  VITLightweightHead`` (``self.out(self.upscale(feats))``);
* ``token_{a,b,c}_*``: ``models/token_masking.py::TokenMasking`` right after
  ``torch.manual_seed(0 / 1 / 2)``;
* ``pl_*``: ``training/uda_vit/uda_vit_generic.py::UDAVITGeneric.
  get_pseudo_label_and_weight`` with a teacher returning fixed logits.

The student is a tiny ``DINOv2VisionTransformer`` (32 px inputs, patch 8:
a 4×4 token grid) with ``ViTUpsampleHead``.
"""
import copy
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.structures import PixelData

import mmseg_uda  # noqa: F401
from mmseg_uda.models.uda import UDAContext
from mmseg_uda.models.uda import mic as mic_module
from mmseg_uda.models.uda.mic import MaskedImageConsistency, mic_sample_rng
from mmseg_uda.models.uda.self_training import (PSEUDO_FLIP_KEY,
                                                PSEUDO_WEIGHT_KEY,
                                                confident_fraction,
                                                pseudo_weight_map,
                                                teacher_pseudo_labels)
from mmseg_uda.models.uda.vfm_uda_transforms import (
    ImageAugDraws, draw_image_aug, random_apply_jitter_blur,
    torchvision_color_jitter, torchvision_jitter_module,
    vfm_uda_strong_augment)
from mmseg_uda.models.utils.seg_forward import (SegOutputs,
                                                decode_head_forward)
from mmseg_uda.models.utils.token_masking import (TokenMaskGenerator,
                                                  token_maskable_backbone)
from mmseg_uda.registry import MODELS
from uda_utils import random_uda_batch, tiny_segmentor_cfg, uda_model_cfg

FIXTURE = osp.join(osp.dirname(__file__), 'fixtures',
                   'vfm_uda_reference.npz')
# fixture name -> (mask_ratio, torch.manual_seed) of the official draw
TOKEN_CASES = {'token_a': (0.7, 0), 'token_b': (0.7, 1),
               'token_c': (0.3, 2)}
ST = dict(type='SelfTraining', pseudo_threshold=0.3,
          pseudo_weight_ignore_top=0, pseudo_weight_ignore_bottom=0,
          imnet_feature_dist_lambda=0.0, seed=3)
# the tiny ViT teacher is more confident: VFM-UDA's threshold
STV = dict(ST, pseudo_threshold=0.968)


@pytest.fixture(scope='module')
def ref():
    return dict(np.load(FIXTURE))


def vit_student_cfg(num_classes=4, input_scale=1.0):
    cfg = tiny_segmentor_cfg(num_classes)
    cfg['backbone'] = dict(
        type='DINOv2VisionTransformer',
        arch=dict(embed_dims=32, num_layers=2, num_heads=2), patch_size=8,
        img_size=32, out_indices=(1, ), input_scale=input_scale)
    cfg['decode_head'] = dict(
        type='ViTUpsampleHead', in_channels=32, num_classes=num_classes,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False,
                         loss_weight=1.0, avg_non_ignore=True))
    return cfg


def token_mic(ratio=0.7, **kwargs):
    cfg = dict(type='MaskedImageConsistency', mask_mode='separatetrg',
               mask_generator=dict(type='token', mask_ratio=ratio), seed=5)
    cfg.update(kwargs)
    return cfg


def build_vit(methods, num_classes=4, input_scale=1.0):
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(dict(
        type='UDASegmentor',
        segmentor=vit_student_cfg(num_classes, input_scale),
        methods=methods)))
    model.init_weights()
    with torch.no_grad():  # a non-zero learned mask token
        model.student.backbone.mask_token.normal_()
    model.teacher.load_state_dict(model.student.state_dict())
    model.teacher_initialized.fill_(1)
    with torch.no_grad():  # a teacher confident on part of the pixels
        model.teacher.decode_head.conv_seg.weight.mul_(30.0)
    return model


def build_conv(methods):
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(uda_model_cfg(methods)))
    model.init_weights()
    model.teacher.load_state_dict(model.student.state_dict())
    model.teacher_initialized.fill_(1)
    with torch.no_grad():
        model.teacher.decode_head.conv_seg.weight.mul_(30.0)
    return model


def make_ctx(model, batch, iteration=0, debug=False):
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    return UDAContext(model, data['inputs'], data['data_samples'], iteration,
                      debug=debug)


def mic_of(model):
    return next(m for m in model.methods
                if isinstance(m, MaskedImageConsistency))


def brute_force_ce(logits, label, weight, ignore_index=255):
    """mean over pixels of w · (logsumexp(z) − z_y); ignored pixels 0."""
    lse = torch.logsumexp(logits, dim=1)
    safe = label.clone()
    safe[label == ignore_index] = 0
    z_y = logits.gather(1, safe[:, None])[:, 0]
    return ((lse - z_y) * (label != ignore_index) * weight).sum() / \
        label.numel()


def student_logits(student, img, token_mask=None):
    """Independent student forward: backbone (with the mask handed over
    explicitly), head, bilinear resize to the image."""
    if token_mask is not None:  # via the class: tests may wrap the method
        type(student.backbone).set_token_mask(student.backbone, token_mask)
    logits = student.decode_head(student.backbone(img))
    return F.interpolate(logits, size=img.shape[-2:], mode='bilinear',
                         align_corners=False)


def expected_token_masks(seed, iteration, indices, ratio, grid):
    """Independent reconstruction of the documented seeding: the second
    draw of each sample's MIC generator seeds its token draw."""
    masks = []
    for g in indices:
        rng = mic_sample_rng(seed, iteration, g)
        rng.randint(0, 2**31 - 1)  # jitter seed
        gen = torch.Generator().manual_seed(int(rng.randint(0, 2**31 - 1)))
        masks.append(ratio > torch.rand((1, grid[0] * grid[1]),
                                        generator=gen))
    return torch.cat(masks).reshape(len(indices), *grid)


# ------------------------------------------------------------------ head
def test_head_equals_official(ref):
    head = MODELS.build(dict(type='ViTUpsampleHead', in_channels=32,
                             num_classes=5))
    state = {k[len('head_w_'):]: torch.from_numpy(v)
             for k, v in ref.items() if k.startswith('head_w_')}
    head.load_state_dict(state, strict=True)
    x = torch.from_numpy(ref['head_in'])
    logits, feat = decode_head_forward(head, [torch.zeros(1), x],
                                       with_feat=True)
    torch.testing.assert_close(feat, torch.from_numpy(ref['head_feat']),
                               atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(logits, torch.from_numpy(ref['head_out']),
                               atol=1e-6, rtol=1e-6)
    assert logits.shape[-2:] == (4 * 3, 4 * 4)  # stride p / 4
    # negative control: another LayerNorm affine gives other logits
    head.upscale[1].bias.data.add_(0.5)
    assert not torch.allclose(head([x]), logits, atol=1e-3)


def test_channel_layer_norm_against_brute_force():
    from mmseg_uda.models.decode_heads.vit_upsample_head import \
        ChannelLayerNorm
    norm = ChannelLayerNorm(6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(2, 6, 3, 5) * 4 + 2
    mean = x.mean(1, keepdim=True)
    var = ((x - mean)**2).mean(1, keepdim=True)  # biased, as LayerNorm
    expected = (x - mean) / torch.sqrt(var + 1e-6) * \
        norm.weight[:, None, None] + norm.bias[:, None, None]
    torch.testing.assert_close(norm(x), expected, atol=1e-5, rtol=1e-5)
    assert set(norm.state_dict()) == {'weight', 'bias'}  # timm's names


def test_head_structure_init_and_loss():
    head = MODELS.build(dict(type='ViTUpsampleHead', in_channels=1024,
                             num_classes=19))
    head.init_weights()
    assert head.conv_seg.bias is None and head.dropout is None
    assert head.channels == 256 and head.upscale[0].out_channels == 512
    assert abs(head.conv_seg.weight.std().item() - 0.1) < 0.005
    assert abs(head.conv_seg.weight.mean().item()) < 0.005
    # mmseg's loss path: logits resized to the label, ignore_index honoured
    small = MODELS.build(dict(
        type='ViTUpsampleHead', in_channels=32, num_classes=4,
        loss_decode=dict(type='CrossEntropyLoss', avg_non_ignore=True)))
    batch = random_uda_batch(batch_size=2, h=32, w=32, seed=0,
                             ignore_frac=0.3)
    samples = batch['data_samples']['source']
    feats = [torch.randn(2, 32, 4, 4)]
    logits = small(feats)
    loss = small.loss_by_feat(logits, samples)['loss_ce']
    label = torch.stack([s.gt_sem_seg.data[0] for s in samples])
    up = F.interpolate(logits, size=(32, 32), mode='bilinear',
                       align_corners=False)
    expected = F.cross_entropy(up, label, ignore_index=255)
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize('kwargs, match', [
    (dict(input_transform='multiple_select', in_index=[0, 1],
          in_channels=[32, 32]), 'in_channels'),
    (dict(in_channels=32, input_transform='resize_concat'),
     'input_transform'),
    (dict(in_channels=32, in_index=[0]), 'in_index'),
])
def test_head_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MODELS.build(dict(type='ViTUpsampleHead', num_classes=4, **kwargs))


# ------------------------------------------------------------ token masks
@pytest.mark.parametrize('name', sorted(TOKEN_CASES))
def test_token_mask_equals_official(ref, name):
    """One generator for the batch reproduces the official
    ``torch.rand((B, L)) < r`` draw after ``torch.manual_seed`` bit for bit;
    replacing the masked tokens gives the official ``TokenMasking`` output."""
    ratio, seed = TOKEN_CASES[name]
    expected = torch.from_numpy(ref[f'{name}_mask'])
    b, hp, wp = expected.shape
    gen = torch.Generator().manual_seed(seed)
    mask = TokenMaskGenerator(ratio).generate_mask((hp, wp), [gen] * b)
    assert mask.dtype == torch.bool and torch.equal(mask, expected)
    x = torch.from_numpy(ref[f'{name}_x'])
    token = torch.from_numpy(ref[f'{name}_mask_token'])
    replaced = torch.where(mask.flatten(1)[..., None], token[0], x)
    assert torch.equal(replaced, torch.from_numpy(ref[f'{name}_x_masked']))


def test_token_mask_distribution_is_bernoulli_per_token():
    """Each token is masked independently with probability r, so the
    masked count per image is Binomial(L, r), not a fixed count."""
    gen = TokenMaskGenerator(0.7)
    mask = gen.generate_mask(
        (16, 16), [torch.Generator().manual_seed(i) for i in range(200)])
    counts = mask.flatten(1).sum(1).float()
    n = 256
    assert abs(counts.mean().item() - 0.7 * n) < 3 * (0.21 * n / 200)**0.5
    assert abs(counts.var().item() / (0.21 * n) - 1) < 0.3
    assert len(set(counts.tolist())) > 5
    # position does not matter: every token masked about 70 % of the time
    per_token = mask.float().mean(0)
    assert per_token.min() > 0.55 and per_token.max() < 0.85
    assert not TokenMaskGenerator(0.0).generate_mask(
        (4, 4), [torch.Generator().manual_seed(0)]).any()


def _recording(backbone):
    """Record every mask handed to the backbone."""
    seen = []
    original = backbone.set_token_mask

    def record(mask):
        seen.append(mask)
        original(mask)

    backbone.set_token_mask = record
    return seen


def test_token_masked_loss_and_gradient_against_brute_force():
    batch = random_uda_batch(batch_size=2, h=32, w=32, seed=2)
    model = build_vit([STV, token_mic()])
    ctx = make_ctx(model, batch, iteration=3)
    model.methods[0].loss(ctx)
    backbone = model.student.backbone
    seen = _recording(backbone)
    losses = mic_of(model).loss(ctx)
    assert seen[-1] is None  # cleared after the forward
    label, _ = teacher_pseudo_labels(ctx)
    weight = ctx.teacher_outputs('target').extras[PSEUDO_WEIGHT_KEY]
    assert 0 < weight.max() < 1
    mask = expected_token_masks(5, 3, [0, 1], 0.7, (4, 4))
    assert torch.equal(seen[0], mask)
    torch.testing.assert_close(losses['mask_keep_ratio'],
                               1 - mask.float().mean())

    params = [p for p in model.student.parameters() if p.requires_grad]
    grads = torch.autograd.grad(losses['loss_masked'], params,
                                allow_unused=True)
    ref_student = copy.deepcopy(model.student)
    ref_loss = brute_force_ce(
        student_logits(ref_student, ctx.img('target'), mask), label, weight)
    torch.testing.assert_close(losses['loss_masked'], ref_loss)
    ref_params = [p for p in ref_student.parameters() if p.requires_grad]
    ref_grads = torch.autograd.grad(ref_loss, ref_params, allow_unused=True)
    for g, rg in zip(grads, ref_grads):
        if rg is None:
            assert g is None
        else:
            torch.testing.assert_close(g, rg, atol=1e-6, rtol=1e-5)
    # the gradient reaches the learned mask token
    index = next(i for i, p in enumerate(params)
                 if p is backbone.mask_token)
    assert grads[index] is not None and grads[index].abs().sum() > 0
    # negative control: the unmasked image gives another loss
    plain = brute_force_ce(student_logits(ref_student, ctx.img('target')),
                           label, weight)
    assert not torch.allclose(plain, ref_loss)
    # the next forward is unmasked again
    img = ctx.img('target')
    torch.testing.assert_close(
        model.student.decode_head(backbone(img)),
        ref_student.decode_head(ref_student.backbone(img)))


def test_token_mask_changes_the_loss_only_through_masked_tokens():
    """Pixels inside masked patches do not reach the loss (their embeddings
    are replaced); pixels of kept patches and the mask token do."""
    batch = random_uda_batch(batch_size=2, h=32, w=32, seed=4)
    model = build_vit([STV, token_mic()])
    ctx = make_ctx(model, batch)
    model.methods[0].loss(ctx)
    mic = mic_of(model)
    img, label, weight = mic.masked_batch(ctx)
    mask = expected_token_masks(5, 0, [0, 1], 0.7, (4, 4))
    assert mask.any() and (~mask).any()
    pix = F.interpolate(mask[:, None].float(), size=(32, 32),
                        mode='nearest').bool().expand_as(img)

    def masked_loss(image):
        with torch.no_grad():
            return brute_force_ce(
                student_logits(model.student, image, mask), label, weight)

    base = masked_loss(img)
    noise = 3.0 * torch.randn_like(img)
    assert torch.equal(masked_loss(torch.where(pix, img + noise, img)), base)
    assert not torch.allclose(
        masked_loss(torch.where(~pix, img + noise, img)), base)
    with torch.no_grad():  # (a constant shift would be undone by LayerNorm)
        model.student.backbone.mask_token.add_(
            torch.randn_like(model.student.backbone.mask_token))
    assert not torch.allclose(masked_loss(img), base)


def test_mask_ratio_zero_equals_the_unmasked_student_loss():
    batch = random_uda_batch(batch_size=2, h=32, w=32, seed=5)
    model = build_vit([STV, token_mic(ratio=0.0)])
    ctx = make_ctx(model, batch)
    model.methods[0].loss(ctx)
    losses = mic_of(model).loss(ctx)
    label, _ = teacher_pseudo_labels(ctx)
    weight = ctx.teacher_outputs('target').extras[PSEUDO_WEIGHT_KEY]
    plain = brute_force_ce(
        student_logits(copy.deepcopy(model.student), ctx.img('target')),
        label, weight)
    torch.testing.assert_close(losses['loss_masked'], plain)
    assert losses['mask_keep_ratio'] == 1
    grad = torch.autograd.grad(losses['loss_masked'],
                               model.student.backbone.mask_token,
                               allow_unused=True)[0]
    assert grad is None or not grad.any()


def test_token_masks_follow_the_global_batch_numbering(monkeypatch):
    """Rank 1 of 2 masks its local samples 0, 1 as the global samples 1, 3
    of a one-process run: 2 processes compute what 1 does."""
    batch = random_uda_batch(batch_size=4, h=32, w=32, seed=6)
    model = build_vit([STV, token_mic()])
    ctx = make_ctx(model, batch, iteration=7)
    model.methods[0].loss(ctx)
    seen = _recording(model.student.backbone)
    mic_of(model).loss(ctx)
    full = seen[0]
    assert torch.equal(full, expected_token_masks(5, 7, range(4), 0.7,
                                                  (4, 4)))
    half = random_uda_batch(batch_size=4, h=32, w=32, seed=6)
    half = dict(inputs={d: v[1::2] for d, v in half['inputs'].items()},
                data_samples={d: v[1::2]
                              for d, v in half['data_samples'].items()})
    monkeypatch.setattr(mic_module, 'global_indices',
                        lambda n, device=None: torch.arange(n) * 2 + 1)
    model2 = build_vit([dict(STV, pseudo_weight_scope='image'), token_mic()])
    ctx2 = make_ctx(model2, half, iteration=7)
    model2.methods[0].loss(ctx2)
    seen2 = _recording(model2.student.backbone)
    mic_of(model2).loss(ctx2)
    assert torch.equal(seen2[0], full[1::2])


def test_token_grid_follows_the_backbone_input_scale():
    """VFM-UDA feeds the ViT at 1.1× (``input_scale``): the mask is drawn
    on the backbone's grid for the scaled input."""
    batch = random_uda_batch(batch_size=2, h=32, w=32, seed=7)
    model = build_vit([STV, token_mic()], input_scale=1.6)
    ctx = make_ctx(model, batch)
    model.methods[0].loss(ctx)
    seen = _recording(model.student.backbone)
    losses = mic_of(model).loss(ctx)
    assert seen[0].shape == (2, 6, 6)  # floor(32 · 1.6 / 8) = 6
    assert torch.isfinite(losses['loss_masked'])


# ------------------------------------------------------------ bad inputs
@pytest.mark.parametrize('ratio', [1.0, -0.1, 1.5, 'a', True, None])
def test_token_mask_ratio_outside_unit_interval_is_error(ratio):
    with pytest.raises(ValueError, match='mask_ratio'):
        MaskedImageConsistency(
            mask_generator=dict(type='token', mask_ratio=ratio))


def test_bad_token_mask_generator_configs():
    with pytest.raises(ValueError, match='mask_generator.type'):
        MaskedImageConsistency(mask_generator=dict(type='tokens',
                                                   mask_ratio=0.7))
    with pytest.raises(ValueError, match='mask_ratio'):
        MaskedImageConsistency(mask_generator=dict(
            type='token', mask_ratio=0.7, mask_block_size=8))
    with pytest.raises(ValueError, match='augmentation'):
        MaskedImageConsistency(augmentation='torchvision')
    with pytest.raises(ValueError, match='blur_p'):
        MaskedImageConsistency(augmentation=dict(
            type='vfm_uda', color_jitter_strength=0.2, color_jitter_p=0.8,
            blur_p=1.5, blur_sigma=(0.15, 1.15)))


def test_backbone_without_token_masks_is_error():
    batch = random_uda_batch(batch_size=2, h=32, w=32, seed=8)
    model = build_conv([ST, token_mic()])
    ctx = make_ctx(model, batch)
    model.methods[0].loss(ctx)
    with pytest.raises(ValueError, match=r"type='token'.*TinyConvBackbone"):
        mic_of(model).loss(ctx)


def test_hrda_student_with_token_masks_is_error():
    from test_mic import build_hrda
    model = build_hrda([ST, token_mic()])
    ctx = make_ctx(model, random_uda_batch(batch_size=2, h=64, w=64,
                                           seed=9))
    with pytest.raises(ValueError,
                       match=r"type='token'.*HRDAEncoderDecoder.*"
                             r'MixVisionTransformer'):
        mic_of(model).loss(ctx)
    with pytest.raises(ValueError, match='HRDAEncoderDecoder'):
        token_maskable_backbone(model.student)


# ------------------------------------------------ flip-averaged pseudo-labels
def test_flip_pseudo_labels_equal_official(ref):
    """Teacher logits of the image and of its flip (fixture) give the
    official label and pseudo-weight (confident fraction 0.968 of the
    batch, 0 where ignored)."""
    img = torch.from_numpy(ref['pl_img'])
    logits_flipped_input = torch.from_numpy(ref['pl_logits_flipped_input'])
    model = build_conv([dict(ST, pseudo_label_flip=True)])
    ctx = UDAContext(model, dict(source=img, target=img),
                     dict(source=[], target=[]), 0)
    ctx._teacher['target'] = SegOutputs(
        backbone=(), logits=torch.from_numpy(ref['pl_logits_img']))
    calls = []

    def teacher(x, with_feat=True):
        calls.append(x)
        assert torch.equal(x, img.flip(-1))
        return SegOutputs(backbone=(), logits=logits_flipped_input)

    ctx.forward_teacher = teacher
    label, prob = teacher_pseudo_labels(ctx, flip=True)
    assert len(calls) == 1
    assert torch.equal(label, torch.from_numpy(ref['pl_label']))
    valid = torch.from_numpy(ref['pl_ignore_mask'] != 255).float()
    fraction = confident_fraction(prob, 0.968, 'batch')
    weight = pseudo_weight_map(fraction, label.shape, 0, 0) * valid
    expected = torch.from_numpy(ref['pl_weight'])
    assert 0 < expected.max() < 1
    torch.testing.assert_close(weight, expected, rtol=1e-6, atol=0)
    # negative control: without the flip the label differs
    plain = torch.from_numpy(ref['pl_logits_img']).softmax(1).argmax(1)
    assert (plain != label).any()
    # cached: a second call neither recomputes nor accepts flip=False
    assert teacher_pseudo_labels(ctx)[0] is label and len(calls) == 1
    with pytest.raises(RuntimeError, match='flip'):
        teacher_pseudo_labels(ctx, flip=False)


def test_self_training_flip_pseudo_labels_against_brute_force():
    batch = random_uda_batch(batch_size=2, h=32, w=32, seed=10)
    for s in batch['data_samples']['target']:
        valid = torch.ones(1, 32, 32, dtype=torch.uint8)
        valid[:, :3] = 0
        s.valid_pseudo_mask = PixelData(data=valid)
    # the tiny conv teacher's averaged confidence is 0.26–0.28
    model = build_conv([dict(ST, pseudo_label_flip=True,
                             pseudo_threshold=0.27), dict(
        type='MaskedImageConsistency', mask_mode='separatetrg',
        mask_generator=dict(type='block', mask_ratio=0.7,
                            mask_block_size=8), seed=5)])
    ctx = make_ctx(model, batch)
    losses = model.methods[0].loss(ctx)
    extras = ctx.teacher_outputs('target').extras
    assert extras[PSEUDO_FLIP_KEY] is True
    x = ctx.img('target')
    teacher = copy.deepcopy(model.teacher).eval()
    with torch.no_grad():
        p1 = F.interpolate(teacher(x, mode='tensor'), size=(32, 32),
                           mode='bilinear').softmax(1)
        p2 = F.interpolate(teacher(x.flip(-1), mode='tensor'),
                           size=(32, 32), mode='bilinear').softmax(1)
    mean = (p1 + p2.flip(-1)) / 2
    label, prob = teacher_pseudo_labels(ctx)
    assert torch.equal(label, mean.argmax(1))
    torch.testing.assert_close(prob, mean.amax(1))
    frac = (mean.amax(1) >= 0.27).float().mean()
    assert 0.05 < frac < 0.95
    torch.testing.assert_close(losses['pseudo_conf_ratio'], frac)
    weight = extras[PSEUDO_WEIGHT_KEY]
    assert (weight[:, :3] == 0).all()
    torch.testing.assert_close(weight[:, 3:], frac.expand(2, 29, 32))
    # negative control: the plain softmax gives another confidence
    assert not torch.allclose(p1.amax(1), mean.amax(1))
    # MIC, composed after SelfTraining, uses the same pseudo-labels
    mic_label, mic_weight = mic_of(model).pseudo_labels(ctx)
    assert mic_label is label and mic_weight is weight


def test_flip_default_off_keeps_one_teacher_forward():
    batch = random_uda_batch(batch_size=2, h=32, w=32, seed=11)
    model = build_conv([ST])
    ctx = make_ctx(model, batch)
    calls = []
    original = ctx.forward_teacher

    def counting(img, with_feat=True):
        calls.append(img)
        return original(img, with_feat)

    ctx.forward_teacher = counting
    model.methods[0].loss(ctx)
    assert len(calls) == 1  # the cached target pass only
    assert ctx.teacher_outputs('target').extras[PSEUDO_FLIP_KEY] is False


# ------------------------------------------------- VFM-UDA augmentations
class _Ctx:
    """The normalisation a UDAContext gives the augmentation (RGB inputs,
    ImageNet mean/std)."""

    class preprocessor:  # noqa: N801
        channel_conversion = True

    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)

    def denormalize(self, img):
        return img * self.std + self.mean

    def renormalize(self, img):
        return (img - self.mean) / self.std


def test_random_apply_is_per_image():
    ctx = _Ctx()
    img = ctx.renormalize(torch.rand(4, 3, 24, 24) * 200 + 20)
    draws = [ImageAugDraws(False, 1, False, 0.5),
             ImageAugDraws(True, 2, False, 0.5),
             ImageAugDraws(False, 3, True, 1.0),
             ImageAugDraws(True, 4, True, 1.0)]
    out = random_apply_jitter_blur(ctx, img, draws, 0.2, 0.2, 0.2, 0.2)
    assert torch.equal(out[0], img[0])
    assert (out[1] - img[1]).abs().max() > 1e-2
    from mmseg_uda.models.uda.dacs_transforms import gaussian_blur
    torch.testing.assert_close(out[2:3], gaussian_blur(img[2:3], [1.0]))
    jittered = ctx.renormalize(255 * torchvision_color_jitter(
        ctx.denormalize(img[3:4]) / 255, [4], 0.2, 0.2, 0.2, 0.2))
    torch.testing.assert_close(out[3:4], gaussian_blur(jittered, [1.0]),
                               atol=1e-4, rtol=1e-4)


def test_colour_jitter_and_blur_equal_torchvision(ref):
    """VFM-UDA's ColorJitter and GaussianBlur are torchvision's: the
    jitter module with torchvision's factors and op order, and the blur with
    VFM-UDA's kernel formula, against torchvision's tensor functions on
    fixed inputs (``tv_*``, see fixtures/vfm_uda_reference.md)."""
    from mmseg_uda.models.uda.dacs_transforms import (blur_kernel_size,
                                                      gaussian_blur)
    img = torch.from_numpy(ref['tv_jitter_in'])
    jitter = torchvision_jitter_module(0.2, 0.2, 0.2, 0.2)
    for i, (factors, order) in enumerate(zip(ref['tv_jitter_factors'],
                                             ref['tv_jitter_order'])):
        b, c, s, h = (torch.tensor([float(f)]) for f in factors)
        params = dict(brightness_factor=b, contrast_factor=c,
                      saturation_factor=s, hue_factor=h,
                      order=torch.from_numpy(order),
                      batch_prob=torch.tensor([1.0]),
                      forward_input_shape=torch.tensor(img[:1].shape))
        out = jitter(img[i:i + 1], params=params)
        expected = torch.from_numpy(ref['tv_jitter_out'][i:i + 1])
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)
        assert (out - img[i:i + 1]).abs().max() > 1e-2
    assert blur_kernel_size(img.shape[-1]) == int(ref['tv_blur_kernel'])
    blurred = gaussian_blur(img[:1], [float(ref['tv_blur_sigma'])])
    torch.testing.assert_close(blurred, torch.from_numpy(ref['tv_blur_out']),
                               atol=1e-5, rtol=0)


def test_torchvision_brightness_is_multiplicative():
    """torchvision's ColorJitter brightness multiplies the image by one
    factor in [1 − b, 1 + b] (DAFormer's kornia-0.5 jitter adds)."""
    img = torch.rand(3, 3, 8, 8) * 0.4 + 0.1
    out = torchvision_color_jitter(img, [0, 1, 2], 0.2, 0.0, 0.0, 0.0)
    ratio = out / img
    factors = ratio.flatten(1)
    assert (factors.max(1).values - factors.min(1).values).max() < 1e-5
    assert ((factors[:, 0] >= 0.8) & (factors[:, 0] <= 1.2)).all()
    assert (factors[:, 0] - 1).abs().max() > 1e-3


def test_vfm_uda_draw_probabilities():
    rngs = [np.random.RandomState(i) for i in range(2000)]
    draws = [draw_image_aug(r, 0.8, 0.5) for r in rngs]
    assert abs(np.mean([d.jitter for d in draws]) - 0.8) < 0.03
    assert abs(np.mean([d.blur for d in draws]) - 0.5) < 0.035
    sigmas = np.array([d.sigma for d in draws])
    assert sigmas.min() >= 0.15 and sigmas.max() <= 1.15


def test_vfm_uda_options_run_and_follow_the_sample_streams():
    """SelfTraining with VFM-UDA's strong/weak augmentation and MIC with
    its target augmentation: finite losses, and MIC's masked image is
    VFM-UDA's augmentation from each sample's stream (after its two MIC
    draws)."""
    batch = random_uda_batch(batch_size=2, h=32, w=32, seed=12)
    st = dict(STV, pseudo_label_flip=True, strong_augmentation='vfm_uda',
              class_mix_target_jitter='vfm_uda')
    model = build_vit([st, token_mic(ratio=0.0, mask_mode='separatetrgaug',
                                     augmentation='vfm_uda')])
    ctx = make_ctx(model, batch, iteration=2, debug=True)
    losses = model.methods[0].loss(ctx)
    assert torch.isfinite(losses['loss_mix'])
    out = mic_of(model).loss(ctx)
    assert torch.isfinite(out['loss_masked'])
    rngs = []
    for g in range(2):
        rng = mic_sample_rng(5, 2, g)
        rng.randint(0, 2**31 - 1)
        rng.randint(0, 2**31 - 1)
        rngs.append(rng)
    expected = vfm_uda_strong_augment(ctx, ctx.img('target'), rngs)
    from mmseg_uda.models.utils.normalization import to_rgb_uint8
    seen = ctx.debug_maps['mic_masked_image'].int()
    assert (seen - to_rgb_uint8(expected, ctx.preprocessor).int()).abs() \
        .max() <= 1
    with pytest.raises(ValueError, match='strong_augmentation'):
        MODELS.build(dict(ST, strong_augmentation='torchvision'))
    with pytest.raises(ValueError, match='class_mix_target_jitter'):
        MODELS.build(dict(ST, class_mix_target_jitter=dict(p=0.9)))


# ------------------------------------------------------------- end to end
def test_vfm_uda_recipe_trains_and_resumes_exactly(tmp_path_factory,
                                                   tmp_path):
    """DINOv2 + ViTUpsampleHead student, SelfTraining with VFM-UDA's
    options and token-masked MIC on the real Runner: a resumed run equals
    an uninterrupted one (the per-sample streams and the mask token)."""
    from e2e_utils import (NUM_CLASSES, assert_resume_exact,
                           make_tiny_uda_data, tiny_runner_cfg)
    root = str(tmp_path_factory.mktemp('tiny_uda_vfm'))
    make_tiny_uda_data(root)
    methods = [
        # threshold 0: the random tiny teacher is never 0.968-confident,
        # and weight 0 would leave the mask token without gradient
        dict(type='SelfTraining', pseudo_threshold=0.0,
             pseudo_weight_ignore_top=0,
             pseudo_weight_ignore_bottom=0, imnet_feature_dist_lambda=0.0,
             pseudo_label_flip=True, strong_augmentation='vfm_uda',
             class_mix_target_jitter='vfm_uda'),
        dict(type='MaskedImageConsistency', mask_mode='separatetrgaug',
             mask_generator=dict(type='token', mask_ratio=0.7),
             augmentation='vfm_uda'),
    ]
    cfg = tiny_runner_cfg(
        root, str(tmp_path), max_iters=2, val_interval=10, methods=methods,
        custom_hooks=[dict(type='EMATeacherHook', alpha=0.99,
                           ema_buffers=True)])
    cfg.model.segmentor = ConfigDict(vit_student_cfg(NUM_CLASSES))
    state = assert_resume_exact(cfg, 2, tmp_path)
    assert 'model.methods.1.rng_seed' in state
    token = state['model.student.backbone.dinov2.embeddings.mask_token']
    assert token.abs().sum() > 0  # trained away from its zero init
