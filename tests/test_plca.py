"""PLCA inside UDASegmentor: the train step and its losses against their
definitions, test-time aggregation, and the 2-process gloo gradient
equality (configs: test_plca_configs.py)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict

import mmseg_uda.models.uda.plca  # noqa: F401  (registers PLCA)
from dist_utils import run_distributed
from mmseg_uda.engine import UDADistributedDataParallel
from mmseg_uda.engine.optimizers import UDAOptimWrapperConstructor
from mmseg_uda.models.losses.cycle_association_loss import (
    CycleAssociationLoss, spatial_aggregation)
from mmseg_uda.models.losses.uniform_cross_entropy_regularizer import \
    UniformCrossEntropyRegularizer
from mmseg_uda.models.uda.plca import PLCA
from mmseg_uda.models.utils.seg_forward import segmentor_forward
from mmseg_uda.registry import MODELS
from uda_utils import random_uda_batch, slice_batch, uda_model_cfg

from mmseg.models.losses.lovasz_loss import lovasz_softmax  # noqa: E402
from mmseg.models.utils import resize  # noqa: E402

SGD = dict(optimizer=dict(type='SGD', lr=0.5, momentum=0.9))


def plca_cfg(**kwargs):
    """PLCA with small blocks (exercises the chunked path on 8x8 maps)."""
    cfg = dict(
        type='PLCA',
        feat_association=dict(
            type='CycleAssociationLoss', metric='cos', chunk_size=5,
            reduction='global_mean', loss_name='loss_ass_feat'),
        cls_association=dict(
            type='CycleAssociationLoss', metric='kl', chunk_size=7,
            reduction='global_mean', loss_name='loss_ass_cls'),
        test_chunk_size=6)
    cfg.update(kwargs)
    return cfg


def build(methods, state=None, **kwargs):
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(uda_model_cfg(methods, **kwargs)))
    model.init_weights()
    if state is not None:
        model.load_state_dict(state)
    return model


def test_train_step_logs_every_term_and_updates_the_student():
    model = build([plca_cfg()], bn_mode='separate')
    optim = UDAOptimWrapperConstructor(copy.deepcopy(SGD))(model)
    before = copy.deepcopy(model.student.state_dict())
    log_vars = model.train_step(random_uda_batch(ignore_frac=0.1), optim)
    for key in ('src.loss_ce', 'plca.loss_ass_feat', 'plca.loss_ass_cls',
                'plca.loss_lovasz'):
        assert torch.isfinite(log_vars[key]) and log_vars[key] > 0, key
    # sg(ℓ/T − 1)·ℓ is negative while ℓ (≈ log K here) is below T = 10
    assert -0.03 < log_vars['plca.loss_lsr'] < 0
    for key in ('plca.valid_ratio_feat', 'plca.valid_ratio_cls'):
        assert 0 < log_vars[key] < 1, key
    total = sum(v for k, v in log_vars.items() if 'loss' in k and k != 'loss')
    torch.testing.assert_close(log_vars['loss'], total)
    after = model.student.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)


def test_losses_equal_their_definitions():
    """Each logged loss == its definition on the student outputs: the
    association on the decode-head feature (cos) and on softmax(logits)
    (KL) with nearest-downsampled labels, LSR on both domains' logits,
    Lovász (x3.0) on the upsampled source logits. (Same block sizes as the
    method: at initialisation the tiny model's class probabilities are
    nearly uniform, so z-normalised KL rows are rounding-noise dominated
    and any change of summation order may flip an argmax; chunked == full
    is tested on non-degenerate inputs in test_cycle_association.py.)"""
    model = build([plca_cfg()])
    batch = model.data_preprocessor(random_uda_batch(ignore_frac=0.1), True)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    src = segmentor_forward(model.student, batch['inputs']['source'], True)
    tgt = segmentor_forward(model.student, batch['inputs']['target'], True)
    label = torch.stack([
        s.gt_sem_seg.data[0] for s in batch['data_samples']['source']
    ])
    small = F.interpolate(label[:, None].float(), size=src.feat.shape[-2:],
                          mode='nearest')[:, 0].long()
    expected = {
        'plca.loss_ass_feat':
        0.1 * CycleAssociationLoss('cos', chunk_size=5)(src.feat, tgt.feat,
                                                        small),
        'plca.loss_ass_cls':
        0.1 * CycleAssociationLoss('kl', chunk_size=7)(
            src.logits.softmax(1), tgt.logits.softmax(1), small),
        'plca.loss_lsr':
        0.01 * (UniformCrossEntropyRegularizer(10.0)(src.logits) +
                UniformCrossEntropyRegularizer(10.0)(tgt.logits)),
        'plca.loss_lovasz':
        3.0 * lovasz_softmax(
            F.softmax(resize(src.logits, size=label.shape[-2:],
                             mode='bilinear', align_corners=False), 1),
            label, classes='present', per_image=False, ignore_index=255),
    }
    for key, value in expected.items():
        torch.testing.assert_close(losses[key], value, rtol=1e-5, atol=1e-6)


def test_terms_with_zero_weight_are_skipped():
    model = build([plca_cfg(lambda_cls=0.0, lambda_lsr=0.0,
                            lovasz_weight=0.0)])
    batch = model.data_preprocessor(random_uda_batch(), True)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    assert {k for k in losses if k.startswith('plca.')} == {
        'plca.loss_ass_feat', 'plca.valid_ratio_feat'}


def test_downsampled_association_runs_on_the_smaller_grid():
    model = build([plca_cfg(downsample_factor=0.5)])
    batch = model.data_preprocessor(random_uda_batch(), True)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    assert torch.isfinite(losses['plca.loss_ass_feat'])


def test_bad_configs_and_inputs_raise():
    with pytest.raises(ValueError, match='lambda_feat'):
        PLCA(feat_association=dict(type='CycleAssociationLoss',
                                   loss_weight=0.1))
    with pytest.raises(ValueError, match="metric='cos'"):
        PLCA(feat_association=dict(type='CycleAssociationLoss', metric='kl'))
    with pytest.raises(ValueError, match='downsample_factor'):
        PLCA(downsample_factor=2.0)
    model = build([plca_cfg()])
    data = random_uda_batch(batch_size=2)
    data['inputs']['target'] = data['inputs']['target'][:1]
    data['data_samples']['target'] = data['data_samples']['target'][:1]
    batch = model.data_preprocessor(data, True)
    with pytest.raises(ValueError, match='pairs source image n'):
        model.loss(batch['inputs'], batch['data_samples'])


def test_test_time_aggregation():
    """tools/test.py: ½f + ½Agg_cos(f) -> classifier -> softmax ->
    ½p + ½Agg_KL(p), resized like encode_decode; chunked == full."""
    model = build([plca_cfg()]).eval()
    batch = model.data_preprocessor(random_uda_batch(batch_size=2), False)
    img = batch['inputs']['target']
    metas = [s.metainfo for s in batch['data_samples']['target']]
    with torch.no_grad():
        got = model.encode_decode(img, metas)
        head = model.student.decode_head
        feat = head._forward_feature(model.student.extract_feat(img))
        feat = spatial_aggregation(feat, 'cos', 0.5, None)
        prob = spatial_aggregation(head.cls_seg(feat).softmax(1), 'kl', 0.5,
                                   None)
        expected = resize(prob, size=img.shape[-2:], mode='bilinear',
                          align_corners=False)
        plain = model.student.encode_decode(img, metas)
        model.methods[0].test_aggregation = False
        without = model.encode_decode(img, metas)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got.softmax(1), plain.softmax(1), atol=1e-3)
    torch.testing.assert_close(without, plain)
    model.methods[0].test_aggregation = True
    preds = model.predict(img, batch['data_samples']['target'])
    assert preds[0].pred_sem_seg.data.shape == (1, 32, 32)
    torch.testing.assert_close(preds[0].seg_logits.data, got[0])


# ---------------------------------------------------------------------------
# 2 gloo processes: one PLCA step on half the batch each == one process on
# the whole batch (norm-free tiny model; Lovász over all ranks, association
# averaged over the valid pixels of all ranks).
# ---------------------------------------------------------------------------
def train_steps(model, batches, wrapper=None):
    optim = UDAOptimWrapperConstructor(copy.deepcopy(SGD))(model)
    runner = wrapper if wrapper is not None else model
    for batch in batches:
        runner.train_step(batch, optim)
    return model.state_dict()


def ddp_worker(rank, world_size, state, batches, out):
    model = build([plca_cfg()], state)
    ddp = UDADistributedDataParallel(module=model, broadcast_buffers=False)
    per_rank = [slice_batch(b, slice(rank, None, world_size)) for b in batches]
    result = train_steps(model, per_rank, ddp)
    if rank == 0:
        torch.save(result, out)


def test_two_process_plca_step_equals_one_process(tmp_path):
    init = build([plca_cfg()]).state_dict()
    batches = [random_uda_batch(batch_size=4, seed=s) for s in range(2)]
    single = train_steps(build([plca_cfg()], init), copy.deepcopy(batches))
    out = tmp_path / 'ddp.pth'
    run_distributed(ddp_worker, 2, init, batches, str(out))
    ddp = torch.load(out)
    for key, value in single.items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-5, atol=1e-5,
                                   msg=key)
    params = [k for k in single if k.startswith('student.')]
    assert params and all(not torch.equal(single[k], init[k]) for k in params)
