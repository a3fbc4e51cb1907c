"""SelfTraining (DAFormer's DACS) on the HRDA segmentor: pseudo-labels from
the teacher's multi-resolution slide, the composite mix loss, feature
distance on the context features, the valid-pseudo-label mask carried
through the pipeline, gradients, and training/resume on the real Runner."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmcv.transforms import Compose
from mmengine.config import ConfigDict
from mmengine.structures import PixelData

from e2e_utils import assert_resume_exact, make_tiny_uda_data, \
    tiny_runner_cfg
from mmseg_uda.datasets.transforms import (GenerateValidPseudoMask,
                                           PackSegInputsWithValidMask)
from mmseg_uda.engine.optimizers import UDAOptimWrapperConstructor
from mmseg_uda.models.segmentors.hrda_encoder_decoder import \
    HRDA_CROP_BOX_KEY
from mmseg_uda.models.uda import UDAContext
from mmseg_uda.models.uda.self_training import (PSEUDO_WEIGHT_KEY,
                                                student_weighted_loss,
                                                teacher_pseudo_labels,
                                                weighted_pixel_ce)
from mmseg_uda.registry import MODELS
from uda_utils import random_uda_batch


TINY_ENCODER = dict(type='TinyConvBackbone', channels=(8, 16))


def hrda_segmentor(num_classes=4):
    return dict(
        type='HRDAEncoderDecoder',
        data_preprocessor=dict(
            type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
            seg_pad_val=255),
        # Conv stages at strides 2 and 4 (fast on a CPU): the DAFormer head
        # then predicts at stride 2.
        backbone=TINY_ENCODER,
        decode_head=dict(
            type='HRDAHead', single_scale_head='DAFormerHead',
            output_stride=2,
            in_channels=[8, 16], in_index=[0, 1], channels=16,
            embed_dims=16, fusion='conv',  # the 1x1 fusion: fast on a CPU
            dropout_ratio=0.1, num_classes=num_classes,
            norm_cfg=dict(type='BN', requires_grad=True),
            align_corners=False, attention_embed_dim=8, hr_loss_weight=0.1,
            loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
        scales=[1, 0.5], hr_crop_size=(16, 16), crop_coord_divisible=4,
        feature_scale=0.5, train_cfg=dict(), test_cfg=dict(mode='whole'))


def st_cfg(**kwargs):
    cfg = dict(type='SelfTraining', pseudo_threshold=0.3,
               pseudo_weight_ignore_top=0, pseudo_weight_ignore_bottom=0,
               imnet_feature_dist_classes=[1, 2],
               imnet_feature_dist_encoder=TINY_ENCODER, seed=3)
    cfg.update(kwargs)
    return cfg


def build(method_cfg=None):
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(
        type='UDASegmentor', segmentor=hrda_segmentor(),
        methods=[method_cfg or st_cfg()]))
    model.init_weights()
    model.teacher.load_state_dict(model.student.state_dict())
    model.teacher_initialized.fill_(1)
    return model


def blocky_batch(seed=0, size=32, cell=8, valid_rows=None):
    batch = random_uda_batch(h=size, w=size, seed=seed)
    g = torch.Generator().manual_seed(seed)
    for sample in batch['data_samples']['source']:
        coarse = torch.randint(0, 4, (size // cell, size // cell),
                               generator=g)
        label = coarse.repeat_interleave(cell, 0).repeat_interleave(cell, 1)
        sample.gt_sem_seg = PixelData(data=label[None])
    if valid_rows is not None:
        for sample in batch['data_samples']['target']:
            mask = torch.zeros(1, size, size, dtype=torch.uint8)
            mask[:, valid_rows[0]:valid_rows[1]] = 1
            sample.valid_pseudo_mask = PixelData(data=mask)
    return batch


def make_ctx(model, batch, iteration=0):
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    return UDAContext(model, data['inputs'], data['data_samples'], iteration)


# ------------------------------------------------------ self-training pieces
def test_pseudo_labels_come_from_teacher_slide():
    model = build()
    ctx = make_ctx(model, blocky_batch())
    label, prob = teacher_pseudo_labels(ctx)
    with torch.no_grad(), model.teacher_forward_mode():
        logits = model.teacher.encode_decode(ctx.img('target'), None)
    p, y = torch.softmax(logits, 1).max(1)
    assert torch.equal(label, y) and torch.allclose(prob, p)
    assert label.shape == (2, 32, 32)


def test_mix_loss_is_hrda_composite_and_valid_mask_weights():
    model = build()
    method = model.methods[0]
    ctx = make_ctx(model, blocky_batch(valid_rows=(4, 28)))
    seen = {}
    forward = ctx.forward_student

    def spy(img, with_feat=True):
        seen['out'] = forward(img, with_feat)
        seen['img'] = img
        return seen['out']

    ctx.forward_student = spy
    losses = method.loss(ctx)
    weight = ctx.teacher_outputs('target').extras[PSEUDO_WEIGHT_KEY]
    assert torch.all(weight[:, :4] == 0) and torch.all(weight[:, 28:] == 0)
    assert torch.all(weight[:, 4:28] == weight[0, 10, 10])
    assert {'loss_mix', 'loss_mix_hr', 'mix_acc_seg',
            'mix_hr_acc_seg', 'loss_fd'} <= set(losses)
    # Recompute the composite loss by hand from the student's outputs.
    out = seen['out']
    box = out.extras[HRDA_CROP_BOX_KEY]
    y1, y2, x1, x2 = box
    assert (y2 - y1, x2 - x1) == (16, 16) and y1 % 4 == 0 and x1 % 4 == 0
    # student_weighted_loss (what produced loss_mix / loss_mix_hr) on the
    # student's outputs against a brute-force composite loss.
    label = torch.randint(0, 4, (2, 32, 32))
    w = torch.rand(2, 32, 32)
    mine = student_weighted_loss(ctx, out, label, w, 'x')
    fused = F.interpolate(out.logits, size=(32, 32), mode='bilinear',
                          align_corners=False)
    hr = F.interpolate(out.extras['hrda_hr_logits'], size=(16, 16),
                       mode='bilinear', align_corners=False)
    torch.testing.assert_close(
        mine['loss_x'], 0.9 * weighted_pixel_ce(fused, label, w, 255))
    torch.testing.assert_close(
        mine['loss_x_hr'],
        0.1 * weighted_pixel_ce(hr, label[:, y1:y2, x1:x2],
                                w[:, y1:y2, x1:x2], 255))


def test_valid_mask_requires_zero_row_margins():
    model = build(st_cfg(pseudo_weight_ignore_top=2))
    ctx = make_ctx(model, blocky_batch(valid_rows=(4, 28)))
    with pytest.raises(ValueError, match='pseudo_weight_ignore_top'):
        model.methods[0].loss(ctx)


def test_feature_distance_uses_context_features():
    """The student's FD features are the context branch (input ×0.5); the
    frozen encoder gets the same downscaled image."""
    model = build()
    method = model.methods[0]
    ctx = make_ctx(model, blocky_batch())
    seen = []
    method._init_imnet_encoder(ctx)
    method.imnet_encoder.register_forward_hook(
        lambda mod, args, out: seen.append(args[0].shape))
    method.feature_distance(ctx)
    assert seen == [(2, 3, 16, 16)]
    src = ctx.student_outputs('source')
    assert src.backbone[-1].shape[-2:] == (4, 4)  # context 16 / stride 4
    # Same weights and same input: zero distance before any update.
    loss, _ = method.feature_distance(ctx)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_train_step_gradients_student_only():
    model = build()
    optim = UDAOptimWrapperConstructor(
        dict(optimizer=dict(type='SGD', lr=0.1)))(model)
    teacher0 = copy.deepcopy(model.teacher.state_dict())
    student0 = {n: p.detach().clone()
                for n, p in model.student.named_parameters()}
    log_vars = model.train_step(blocky_batch(valid_rows=(2, 30)), optim)
    for key in ('src.loss_ce', 'src.hr.loss_ce', 'selftraining.loss_mix',
                'selftraining.loss_mix_hr', 'selftraining.loss_fd'):
        assert torch.isfinite(log_vars[key]), key
    frozen = list(model.teacher.parameters()) + \
        list(model.methods[0].imnet_encoder.parameters())
    assert all(p.grad is None for p in frozen)
    for k, v in model.teacher.state_dict().items():
        if 'num_batches_tracked' in k or 'running' in k:
            continue  # the teacher's own BN buffers follow its forwards
        assert torch.equal(v, teacher0[k]), k
    # The attention head was trained (it has its own parameters).
    assert any(not torch.equal(p, student0[n])
               for n, p in model.student.named_parameters()
               if 'scale_attention' in n)


# --------------------------------------------------- valid-pseudo mask data
def run_pipeline(img_shape, margins, offset_x, flip, crop=(32, 32)):
    pipeline = Compose([
        dict(type='GenerateValidPseudoMask', margins=margins),
        dict(type='RandomCrop', crop_size=crop),
        dict(type='RandomFlip', prob=1.0 if flip else 0.0),
        dict(type='Pad', size=(crop[1], crop[0] + 4)),  # (w, h)
        dict(type='PackSegInputsWithValidMask'),
    ])
    h, w = img_shape
    np.random.seed(0)
    # Drive RandomCrop's offsets: mmseg draws offset_h then offset_w.
    state = {'calls': 0}
    real = np.random.randint

    def fake_randint(low, high=None, *args, **kwargs):
        state['calls'] += 1
        return 0 if state['calls'] % 2 == 1 else offset_x

    np.random.randint = fake_randint
    try:
        out = pipeline(dict(img=np.zeros((h, w, 3), np.uint8),
                            img_path='x.png', seg_fields=[]))
    finally:
        np.random.randint = real
    return out['data_samples']


def test_valid_mask_follows_crop_flip_and_pad():
    margins = (3, 8, 2, 2)  # top, bottom, left, right
    for offset, flip in [(0, False), (16, False), (32, False), (0, True)]:
        sample = run_pipeline((32, 64), margins, offset, flip)
        mask = sample.valid_pseudo_mask.data[0].numpy()
        assert mask.shape == (36, 32)
        assert 'gt_sem_seg' not in sample
        full = GenerateValidPseudoMask.margin_mask((32, 64), margins)
        expected = full[:, offset:offset + 32]
        if flip:
            expected = expected[:, ::-1]
        assert np.array_equal(mask[:32], expected), (offset, flip)
        assert not mask[32:].any()  # padding is never a valid pseudo-label
        assert not mask[:3].any() and not mask[24:32].any()
        side = mask[3:24]
        left_zero = not side[:, :2].any()
        right_zero = not side[:, -2:].any()
        touches_left = offset == 0
        touches_right = offset == 32
        if flip:
            touches_left, touches_right = touches_right, touches_left
        assert left_zero == touches_left and right_zero == touches_right


def test_valid_mask_bad_input():
    with pytest.raises(ValueError, match='margins'):
        GenerateValidPseudoMask(margins=(1, 2, 3))
    t = GenerateValidPseudoMask(size=(10, 20))
    with pytest.raises(ValueError, match='size'):
        t(dict(img=np.zeros((12, 20, 3), np.uint8), img_path='x.png'))
    with pytest.raises(ValueError, match='LoadAnnotations'):
        GenerateValidPseudoMask()(dict(
            img=np.zeros((12, 20, 3), np.uint8),
            gt_seg_map=np.zeros((12, 20), np.uint8)))
    # Without GenerateValidPseudoMask it is plain PackSegInputs.
    packed = PackSegInputsWithValidMask()(dict(
        img=np.zeros((4, 4, 3), np.uint8), img_path='x.png'))
    assert 'valid_pseudo_mask' not in packed['data_samples']


# --------------------------------------------------------- real Runner
def hrda_runner_cfg(tmp_path, max_iters=4):
    root = tmp_path / 'data'
    make_tiny_uda_data(str(root))
    cfg = tiny_runner_cfg(
        str(root), str(tmp_path / 'work'),
        methods=[st_cfg(imnet_feature_dist_classes=[13])],
        max_iters=max_iters, val_interval=max_iters, checkpoint_interval=2,
        custom_hooks=[dict(type='EMATeacherHook', alpha=0.99)])
    segmentor = hrda_segmentor(19)
    cfg.model.segmentor = ConfigDict(segmentor)
    target = cfg.train_dataloader.dataset.target
    target.pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='GenerateValidPseudoMask', margins=(2, 6, 2, 2)),
        dict(type='RandomCrop', crop_size=(32, 32)),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackSegInputsWithValidMask'),
    ]
    return cfg


def test_runner_trains_and_resumes_exactly(tmp_path):
    cfg = hrda_runner_cfg(tmp_path)
    full = assert_resume_exact(cfg, 4, tmp_path)
    assert any(k.startswith('model.student.decode_head.scale_attention')
               for k in full)


def test_runner_hrda_mic_t2s_resumes_exactly(tmp_path):
    """configs/t2s/gta2cs_hrda.py's composition ([SelfTraining, MIC, T2S]
    on HRDA) on the real Runner: 4 iterations in one go equal 2 + resume
    + 2, with BN, dropout and num_workers as tiny_runner_cfg sets them."""
    from t2s_utils import t2s_cfg
    cfg = hrda_runner_cfg(tmp_path)
    cfg.model.methods = [
        st_cfg(imnet_feature_dist_classes=[13]),
        dict(type='MaskedImageConsistency', mask_mode='separatetrgaug',
             mask_generator=dict(type='block', mask_ratio=0.7,
                                 mask_block_size=8)),
        t2s_cfg(num_classes=19, projection_head=dict(
            type='ProjectionHead', in_channels=16, hidden_channels=16,
            out_channels=8, norm_cfg=None)),
    ]
    full = assert_resume_exact(cfg, 4, tmp_path)
    # every method's state took part and was restored
    assert any(k.startswith('model.methods.2.') and 'queue' in k
               for k in full), [k for k in full if 'methods.2' in k][:10]
    assert 'model.methods.1.rng_seed' in full
