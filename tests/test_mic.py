"""MaskedImageConsistency (MIC): block masks and the masked batch against the
official code's outputs on fixed inputs, the loss and its gradient against
a brute-force reference, teacher isolation, bad inputs, and end-to-end
training with exact resume on the real Runner.

``fixtures/mic_reference.npz`` holds outputs of the official code
``lhoyer/MIC`` commit 2f932a98b5dd9f598aaeb32411863ceea0809314, run once in a
scratch folder outside this repository (kornia 0.9, torch CPU):

* ``mask_a`` / ``mask_b`` / ``mask_c``:
  ``seg/mmseg/models/utils/masking_transforms.py::BlockMaskGenerator(
  mask_ratio=0.7, mask_block_size=8).generate_mask(torch.zeros(shape))``
  right after ``torch.manual_seed(seed)``, shapes/seeds in ``MASK_CASES``.
* ``<case>_img/_lbl/_weight/_mask``: the arguments that
  ``seg/mmseg/models/uda/masking_consistency_module.py::
  MaskingConsistencyModule.__call__`` passes to ``model.forward_train``
  (a recording stub) for the inputs ``img``, ``target_img``, ``gt``,
  ``plabel``, ``pweight`` (ImageNet mean/std in ``img_norm_cfg``), with the
  python/numpy/torch seeds in ``CALL_CASES``; ``_mask`` is the mask its
  ``torch.rand`` drew (regenerated from the same torch seed). Inputs are
  float16-representable; outputs without blur are stored as float16
  (exact).
"""
import copy
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

import mmseg_uda  # noqa: F401
from mmseg_uda.models.uda import UDAContext
from mmseg_uda.models.uda.dacs_transforms import gaussian_blur
from mmseg_uda.models.uda.mic import (MaskedImageConsistency,
                                      mic_iteration_rng, mic_sample_rng)
from mmseg_uda.models.uda.self_training import (PSEUDO_LABEL_KEY,
                                                PSEUDO_PROB_KEY,
                                                PSEUDO_WEIGHT_KEY,
                                                confident_fraction,
                                                teacher_pseudo_labels)
from mmseg_uda.models.utils.masking import (BlockMaskGenerator,
                                            block_grid_shape)
from mmseg_uda.models.utils.normalization import to_rgb_uint8
from mmseg_uda.models.utils.seg_forward import SegOutputs
from mmseg_uda.registry import MODELS
from uda_utils import random_uda_batch, uda_model_cfg

FIXTURE = osp.join(osp.dirname(__file__), 'fixtures', 'mic_reference.npz')
# name -> (shape, torch.manual_seed) of the official generate_mask calls
MASK_CASES = {
    'mask_a': ((2, 3, 40, 72), 0),
    'mask_b': ((2, 3, 36, 76), 1),  # 4.5 -> 4 rows, 9.5 -> 10 columns
    'mask_c': ((1, 3, 44, 20), 2),  # 5.5 -> 6 rows, 2.5 -> 2 columns
}
# name -> (mask_mode, mask_lambda, jitter draw, blur draw, numpy sigma,
#          torch.manual_seed of the mask) of the official __call__ runs
CALL_CASES = {
    'trgaug_blur': ('separatetrgaug', 1.0, 0.13436424411240122,
                    0.8474337369372327, 0.7007979025745754, 5),
    'separate': ('separate', 1.0, None, None, None, 7),
    'trg_lambda': ('separatetrg', 0.5, None, None, None, 9),
    'srcaug_none': ('separatesrcaug', 1.0, 0.11295717017616302,
                    0.1308521669034325, 1.1170298390136766, 11),
}
ST = dict(type='SelfTraining', pseudo_threshold=0.3,
          pseudo_weight_ignore_top=2, pseudo_weight_ignore_bottom=3,
          imnet_feature_dist_lambda=0.0, seed=3)


@pytest.fixture(scope='module')
def ref():
    return dict(np.load(FIXTURE))


def mic_cfg(**kwargs):
    cfg = dict(type='MaskedImageConsistency', mask_mode='separatetrg',
               mask_generator=dict(type='block', mask_ratio=0.7,
                                   mask_block_size=8), seed=5)
    cfg.update(kwargs)
    return cfg


def build(methods, num_classes=4, with_bn=False):
    torch.manual_seed(0)
    model = MODELS.build(
        ConfigDict(uda_model_cfg(methods, num_classes=num_classes,
                                 with_bn=with_bn)))
    model.init_weights()
    model.teacher.load_state_dict(model.student.state_dict())
    model.teacher_initialized.fill_(1)
    with torch.no_grad():  # a teacher confident on part of the pixels
        model.teacher.decode_head.conv_seg.weight.mul_(30.0)
    return model


def make_ctx(model, batch, iteration=0, debug=False):
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    return UDAContext(model, data['inputs'], data['data_samples'], iteration,
                      debug=debug)


def mic_of(model):
    return next(m for m in model.methods
                if isinstance(m, MaskedImageConsistency))


# -------------------------------------------------------------- block masks
@pytest.mark.parametrize('name', sorted(MASK_CASES))
def test_block_mask_equals_official(ref, name):
    """One generator for the batch, drawn image after image, reproduces the
    official ``torch.rand(B, 1, h, w)`` after ``torch.manual_seed``."""
    shape, seed = MASK_CASES[name]
    gen = torch.Generator().manual_seed(seed)
    mask = BlockMaskGenerator(0.7, 8).generate_mask(shape, [gen] * shape[0])
    assert mask.shape == ref[name].shape
    assert torch.equal(mask, torch.from_numpy(ref[name]).float())


def test_block_grid_uses_python_round():
    assert block_grid_shape(36, 76, 8) == (4, 10)
    assert block_grid_shape(44, 20, 8) == (6, 2)
    assert block_grid_shape(1024, 1024, 64) == (16, 16)
    assert block_grid_shape(1080, 1920, 64) == (17, 30)


def test_block_mask_blocks_and_masked_pixels():
    """Exact b×b blocks constant over channels; masked pixels exactly 0,
    kept ones unchanged; the kept fraction is 1 − r."""
    gen = BlockMaskGenerator(0.7, 16)
    img = torch.randn(3, 3, 64, 64) + 5.0  # no zeros in the input
    masked, mask = gen.mask_image(
        img, [torch.Generator().manual_seed(i) for i in range(3)])
    blocks = mask.reshape(3, 1, 4, 16, 4, 16)
    assert torch.equal(blocks.amax((3, 5)), blocks.amin((3, 5)))
    keep = mask.expand_as(img).bool()
    assert torch.equal(masked[keep], img[keep])
    assert (masked[~keep] == 0).all()
    # many draws: kept fraction 0.3 (std of the estimate ~0.006)
    shape = (40, 3, 64, 64)
    many = BlockMaskGenerator(0.7, 4).generate_mask(
        shape, [torch.Generator().manual_seed(100 + i) for i in range(40)])
    assert abs(many.mean().item() - 0.3) < 0.03
    # ratio 0 keeps everything
    assert BlockMaskGenerator(0.0, 4).generate_mask(
        (1, 3, 8, 8), [torch.Generator().manual_seed(0)]).all()


@pytest.mark.parametrize('ratio', [1.0, -0.1, 1.5, 'a', True, None])
def test_mask_ratio_outside_unit_interval_is_error(ratio):
    with pytest.raises(ValueError, match='mask_generator.mask_ratio'):
        MaskedImageConsistency(mask_generator=dict(
            type='block', mask_ratio=ratio, mask_block_size=8))


@pytest.mark.parametrize('cfg, key', [
    (dict(type='block', mask_ratio=0.7, mask_block_size=0),
     'mask_block_size'),
    (dict(type='block', mask_ratio=0.7, mask_block_size=8.0),
     'mask_block_size'),
    (dict(type='random', mask_ratio=0.7, mask_block_size=8),
     'mask_generator.type'),
    (dict(type='block', mask_ratio=0.7), 'mask_block_size'),
])
def test_bad_mask_generator_is_error(cfg, key):
    with pytest.raises(ValueError, match=key):
        MaskedImageConsistency(mask_generator=cfg)


def test_bad_method_arguments_are_errors():
    with pytest.raises(ValueError, match='mask_mode'):
        MaskedImageConsistency(mask_mode='target')
    with pytest.raises(ValueError, match='mask_lambda'):
        MaskedImageConsistency(mask_lambda=-1.0)
    with pytest.raises(ValueError, match='mask_alpha'):
        MaskedImageConsistency(mask_alpha=0.99)
    with pytest.raises(ValueError, match='mask_pseudo_threshold'):
        MaskedImageConsistency(mask_pseudo_threshold=2.0)


def test_block_larger_than_image_is_error():
    with pytest.raises(ValueError, match='mask_block_size=64'):
        BlockMaskGenerator(0.7, 64).generate_mask(
            (1, 3, 16, 16), [None])


# ------------------------------------------------- official __call__ parity
def official_ctx(model, ref):
    """A context holding the fixture's normalised images, source labels
    and the teacher's cached pseudo-label/weight (as SelfTraining leaves
    them)."""
    img = torch.from_numpy(ref['img']).float()
    target = torch.from_numpy(ref['target_img']).float()
    samples = {'source': [], 'target': []}
    for i in range(2):
        for domain in ('source', 'target'):
            s = SegDataSample()
            s.set_metainfo(dict(img_shape=(24, 40), ori_shape=(24, 40)))
            if domain == 'source':
                s.gt_sem_seg = PixelData(
                    data=torch.from_numpy(ref['gt'][i]).long())
            samples[domain].append(s)
    ctx = UDAContext(model, dict(source=img, target=target), samples, 0)
    plabel = torch.from_numpy(ref['plabel']).long()
    ctx._teacher['target'] = SegOutputs(
        backbone=(), logits=torch.zeros(2, 19, 6, 10),
        extras={PSEUDO_LABEL_KEY: plabel,
                PSEUDO_PROB_KEY: torch.ones(plabel.shape),
                PSEUDO_WEIGHT_KEY: torch.from_numpy(ref['pweight'])})
    return ctx


@pytest.mark.parametrize('name', sorted(CALL_CASES))
def test_masked_batch_equals_official_call(ref, name):
    mode, lam, jitter, blur, sigma, torch_seed = CALL_CASES[name]
    model = build([ST, mic_cfg(mask_mode=mode, mask_lambda=lam)],
                  num_classes=19)
    mic = mic_of(model)
    ctx = official_ctx(model, ref)
    img, label, weight = mic.masked_batch(ctx)
    if jitter is not None:
        img = mic.augment_batch(ctx, img, jitter, blur, sigma, [0, 1])
    gen = torch.Generator().manual_seed(torch_seed)
    masked, mask = mic.mask_gen.mask_image(img, [gen, gen])
    assert torch.equal(mask, torch.from_numpy(ref[f'{name}_mask']).float())
    expected = torch.from_numpy(ref[f'{name}_img']).float()
    if blur is not None and blur > 0.5:
        torch.testing.assert_close(masked, expected, atol=1e-5, rtol=1e-5)
        # the blur really ran (negative control: unblurred differs)
        unblurred = mic.masked_batch(ctx)[0] * mask
        assert (unblurred - expected).abs().max() > 1e-2
    else:
        assert torch.equal(masked, expected)
    assert torch.equal(label, torch.from_numpy(ref[f'{name}_lbl'])[:, 0]
                       .long())
    if f'{name}_weight' in ref:
        assert torch.equal(weight, torch.from_numpy(ref[f'{name}_weight']))
    else:  # source modes: no seg_weight, i.e. weight 1
        assert torch.equal(weight, torch.ones_like(weight))


def test_mask_lambda_scales_the_loss():
    batch = random_uda_batch(batch_size=2, h=32, w=32, seed=1)
    losses = {}
    for lam in (1.0, 0.5):
        model = build([ST, mic_cfg(mask_lambda=lam)])
        ctx = make_ctx(model, batch)
        model.methods[0].loss(ctx)
        losses[lam] = mic_of(model).loss(ctx)['loss_masked']
    torch.testing.assert_close(losses[0.5], 0.5 * losses[1.0])


# ------------------------------------------------- loss, gradient, teacher
def brute_force_ce(logits, label, weight, ignore_index=255):
    """mean over pixels of w · (logsumexp(z) − z_y); ignored pixels 0."""
    lse = torch.logsumexp(logits, dim=1)
    safe = label.clone()
    safe[label == ignore_index] = 0
    z_y = logits.gather(1, safe[:, None])[:, 0]
    ce = (lse - z_y) * (label != ignore_index)
    return (ce * weight).sum() / label.numel()


def expected_masked_image(ctx, img, seed, iteration, world_size=1, rank=0,
                          block=8, ratio=0.7):
    """Independent reconstruction of the mask from the documented seeding."""
    masks = []
    h, w = img.shape[-2:]
    for i in range(img.shape[0]):
        rng = mic_sample_rng(seed, iteration, i * world_size + rank)
        rng.randint(0, 2**31 - 1)  # jitter seed
        g = torch.Generator().manual_seed(int(rng.randint(0, 2**31 - 1)))
        cells = torch.rand((1, 1, round(h / block), round(w / block)),
                           generator=g)
        masks.append(F.interpolate((cells > ratio).float(), size=(h, w)))
    mask = torch.cat(masks)
    return img * mask, mask


@pytest.mark.parametrize('with_bn', [False, True])
def test_loss_and_gradient_against_brute_force(with_bn):
    batch = random_uda_batch(batch_size=2, h=32, w=32, seed=2)
    model = build([ST, mic_cfg()], with_bn=with_bn)
    ctx = make_ctx(model, batch, iteration=3)
    model.methods[0].loss(ctx)
    losses = mic_of(model).loss(ctx)
    label, _ = teacher_pseudo_labels(ctx)
    weight = ctx.teacher_outputs('target').extras[PSEUDO_WEIGHT_KEY]
    # SelfTraining's un-mixed weight: the batch fraction, rows 2/3 zeroed
    _, prob = teacher_pseudo_labels(ctx)
    frac = (prob >= 0.3).float().mean()
    assert 0.05 < frac < 0.95
    assert torch.allclose(weight[:, 5:20], frac.expand(2, 15, 32))
    assert (weight[:, :2] == 0).all() and (weight[:, -3:] == 0).all()

    masked, mask = expected_masked_image(ctx, ctx.img('target'), 5, 3)
    assert torch.allclose(losses['mask_keep_ratio'], mask.mean())
    params = [p for p in model.student.parameters() if p.requires_grad]
    grads = torch.autograd.grad(losses['loss_masked'], params)

    ref_model = copy.deepcopy(model.student)
    logits = F.interpolate(ref_model(masked, mode='tensor'), size=(32, 32),
                           mode='bilinear', align_corners=False)
    ref_loss = brute_force_ce(logits, label, weight)
    torch.testing.assert_close(losses['loss_masked'], ref_loss)
    assert ref_loss > 0
    ref_grads = torch.autograd.grad(
        ref_loss, [p for p in ref_model.parameters() if p.requires_grad])
    for g, rg in zip(grads, ref_grads):
        torch.testing.assert_close(g, rg, atol=1e-6, rtol=1e-5)
    # negative control: the unmasked target gives another loss
    plain = F.interpolate(ref_model(ctx.img('target'), mode='tensor'),
                          size=(32, 32), mode='bilinear', align_corners=False)
    assert not torch.allclose(brute_force_ce(plain, label, weight), ref_loss)


def test_teacher_gets_no_gradient():
    batch = random_uda_batch(batch_size=2, h=32, w=32, seed=3)
    model = build([ST, mic_cfg(mask_mode='separatetrgaug')])
    ctx = make_ctx(model, batch)
    model.methods[0].loss(ctx)
    losses = mic_of(model).loss(ctx)
    losses['loss_masked'].backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.student.parameters())


def test_standalone_mic_computes_pseudo_labels_itself():
    """Without SelfTraining (e.g. on AdvEnt): teacher pseudo-labels, the
    whole-batch confident fraction with ``pseudo_threshold``, its own rows."""
    batch = random_uda_batch(batch_size=2, h=32, w=32, seed=4)
    model = build([mic_cfg(pseudo_threshold=0.3, pseudo_weight_ignore_top=1)])
    ctx = make_ctx(model, batch)
    _, label, weight = mic_of(model).masked_batch(ctx)
    ref_label, prob = teacher_pseudo_labels(ctx)
    assert torch.equal(label, ref_label)
    frac = confident_fraction(prob, 0.3, 'batch')[0]
    assert 0 < frac < 1
    assert (weight[:, 0] == 0).all()
    assert torch.allclose(weight[:, 1:], frac.expand(2, 31, 32))
    # None: weight 1 (rows kept at 0); float: recomputed fraction
    model = build([ST, mic_cfg(mask_pseudo_threshold=None)])
    ctx = make_ctx(model, batch)
    model.methods[0].loss(ctx)
    w = mic_of(model).masked_batch(ctx)[2]
    assert (w[:, 2:-3] == 1).all() and (w[:, :2] == 0).all()
    model = build([ST, mic_cfg(mask_pseudo_threshold=0.9)])
    ctx = make_ctx(model, batch)
    model.methods[0].loss(ctx)
    w = mic_of(model).masked_batch(ctx)[2]
    _, prob = teacher_pseudo_labels(ctx)
    assert torch.allclose(w[:, 5], (prob >= 0.9).float().mean().expand(2, 32))


def test_valid_pseudo_mask_multiplies_the_weight():
    batch = random_uda_batch(batch_size=2, h=32, w=32, seed=4)
    for s in batch['data_samples']['target']:
        valid = torch.ones(1, 32, 32, dtype=torch.uint8)
        valid[:, :, :5] = 0
        s.valid_pseudo_mask = PixelData(data=valid)
    model = build([mic_cfg(pseudo_threshold=0.0)])
    ctx = make_ctx(model, batch)
    w = mic_of(model).masked_batch(ctx)[2]
    assert (w[:, :, :5] == 0).all() and (w[:, :, 5:] == 1).all()


def test_separate_mode_needs_two_images_and_order_of_methods():
    batch = random_uda_batch(batch_size=3, h=32, w=32, seed=5)
    model = build([ST, mic_cfg(mask_mode='separate')])
    ctx = make_ctx(model, batch)
    model.methods[0].loss(ctx)
    with pytest.raises(ValueError, match='batch_size=2'):
        mic_of(model).loss(ctx)
    model = build([mic_cfg(), ST])
    ctx = make_ctx(model, random_uda_batch(batch_size=2, seed=5))
    with pytest.raises(ValueError, match='must come after SelfTraining'):
        mic_of(model).loss(ctx)


def test_augmentation_draw_order_and_gates():
    """Jitter gate, blur gate, one σ for the batch, from the iteration
    generator; the aug runs only in *aug modes and only when the gates
    open; masking comes after it."""
    batch = random_uda_batch(batch_size=2, h=32, w=32, seed=6)
    model = build([ST, mic_cfg(mask_mode='separatetrgaug')])
    mic = mic_of(model)

    # find iterations with (jitter off, blur on) and (both off)
    def gates(it):
        rng = mic_iteration_rng(5, it)
        return rng.uniform(), rng.uniform(), rng.uniform(0.15, 1.15)
    it_blur = next(i for i in range(100)
                   if gates(i)[0] <= 0.2 and gates(i)[1] > 0.5)
    it_none = next(i for i in range(100)
                   if gates(i)[0] <= 0.2 and gates(i)[1] <= 0.5)
    for it, blurred in ((it_blur, True), (it_none, False)):
        ctx = make_ctx(model, batch, iteration=it, debug=True)
        model.methods[0].loss(ctx)
        out = mic.loss(ctx)
        tgt = ctx.img('target')
        if blurred:
            tgt = gaussian_blur(tgt, [gates(it)[2]] * 2)
        masked, mask = expected_masked_image(ctx, tgt, 5, it)
        assert torch.allclose(out['mask_keep_ratio'], mask.mean())
        assert torch.equal(ctx.debug_maps['mic_mask'], mask[:, 0].long())
        seen = ctx.debug_maps['mic_masked_image'].int()
        expected = to_rgb_uint8(masked, ctx.preprocessor).int()
        assert (seen - expected).abs().max() <= 1
        if blurred:  # negative control: the unblurred image differs
            plain, _ = expected_masked_image(ctx, ctx.img('target'), 5, it)
            plain = to_rgb_uint8(plain, ctx.preprocessor).int()
            assert (seen - plain).abs().max() > 5


# ------------------------------------------------------------- end to end
@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    from e2e_utils import make_tiny_uda_data
    root = tmp_path_factory.mktemp('tiny_uda_mic')
    make_tiny_uda_data(str(root))
    return str(root)


def test_self_training_plus_mic_trains_and_resumes_exactly(data_root,
                                                          tmp_path):
    from e2e_utils import assert_resume_exact, tiny_runner_cfg
    methods = [
        dict(type='SelfTraining', pseudo_weight_ignore_top=2,
             pseudo_weight_ignore_bottom=4, imnet_feature_dist_lambda=0.0),
        dict(type='MaskedImageConsistency', mask_mode='separatetrgaug',
             mask_generator=dict(type='block', mask_ratio=0.7,
                                 mask_block_size=8)),
    ]
    cfg = tiny_runner_cfg(
        data_root, str(tmp_path), max_iters=4, methods=methods,
        custom_hooks=[dict(type='EMATeacherHook', alpha=0.99)],
        with_bn=True)
    state = assert_resume_exact(cfg, 4, tmp_path)
    assert 'model.methods.1.rng_seed' in state
    assert int(state['model.teacher_initialized']) == 1


# ------------------------------------------------------------------- HRDA
def hrda_student_cfg(num_classes=4):
    """A tiny HRDAEncoderDecoder (MiT stages, FCNHead inside HRDAHead):
    64² training crops, 32² detail crops."""
    return dict(
        type='HRDAEncoderDecoder',
        data_preprocessor=dict(
            type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
            seg_pad_val=255),
        backbone=dict(
            type='MixVisionTransformer', in_channels=3, embed_dims=8,
            num_stages=4, num_layers=[1, 1, 1, 1], num_heads=[1, 2, 4, 8],
            patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2],
            sr_ratios=[8, 4, 2, 1], out_indices=(0, 1, 2, 3), mlp_ratio=2,
            drop_path_rate=0.0),
        decode_head=dict(
            type='HRDAHead', single_scale_head='FCNHead', output_stride=4,
            in_channels=8, in_index=0, channels=8, num_convs=1,
            concat_input=False, num_classes=num_classes,
            hr_loss_weight=0.1),
        scales=[1, 0.5], hr_crop_size=(32, 32), crop_coord_divisible=8,
        feature_scale=0.5, test_cfg=dict(mode='whole'))


def build_hrda(methods):
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(dict(
        type='UDASegmentor', segmentor=hrda_student_cfg(),
        methods=methods)))
    model.init_weights()
    model.teacher.load_state_dict(model.student.state_dict())
    model.teacher_initialized.fill_(1)
    return model


@pytest.mark.parametrize('all_terms', [False, True])
def test_mic_on_hrda_uses_the_multi_resolution_loss(all_terms):
    """On HRDA the masked image goes through the student's multi-resolution
    training forward (a new detail box) and its 0.9·fused + 0.1·detail
    loss; mask_lambda scales only the fused term (official) unless
    mask_lambda_all_terms."""
    batch = random_uda_batch(batch_size=2, h=64, w=64, seed=7)
    st = dict(ST, pseudo_threshold=0.0)
    model = build_hrda([st, mic_cfg(mask_lambda=0.5,
                                    mask_lambda_all_terms=all_terms)])
    mic = mic_of(model)
    ctx = make_ctx(model, batch, iteration=1)
    model.methods[0].loss(ctx)
    np.random.seed(11)
    torch.manual_seed(11)  # the head's dropout
    losses = mic.loss(ctx)
    assert {'loss_masked', 'loss_masked_hr'} <= set(losses)
    label, _ = teacher_pseudo_labels(ctx)
    weight = ctx.teacher_outputs('target').extras[PSEUDO_WEIGHT_KEY]
    masked, _ = expected_masked_image(ctx, ctx.img('target'), 5, 1)
    np.random.seed(11)  # the same detail box
    torch.manual_seed(11)
    student = model.student
    ref = student.uda_loss(student.uda_train_forward(masked), label, weight)
    fused = next(v for k, v in ref.items()
                 if 'loss' in k and not k.startswith('hr.'))
    detail = next(v for k, v in ref.items()
                  if 'loss' in k and k.startswith('hr.'))
    torch.testing.assert_close(losses['loss_masked'], 0.5 * fused)
    torch.testing.assert_close(losses['loss_masked_hr'],
                               0.5 * detail if all_terms else detail)
    assert fused > 0 and detail > 0
    losses['loss_masked'].backward()
    assert all(p.grad is None for p in model.teacher.parameters())
