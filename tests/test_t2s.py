"""T2S method: sampling/queue/prototype/re-weighting units, projection
head and its EMA, gradient routing of the direction switch, one train step,
DG mode, resume exactness (2 processes: ``test_t2s_distributed.py``)."""
import copy
from collections import deque

import pytest
import torch
import torch.nn.functional as F

import mmseg_uda.models.uda.t2s  # noqa: F401  (registers T2S & co.)
from mmseg_uda.engine.hooks import ema_momentum
from mmseg_uda.models.modules.projection_head import ProjectionHead
from mmseg_uda.models.uda.t2s import (T2S, Samples,
                                      class_weights_from_performance,
                                      downsample_labels)
from t2s_utils import build, context, optim, set_iter, t2s_cfg
from uda_utils import random_uda_batch


# ------------------------------------------------------------------ units
def test_downsample_labels_nearest_and_ratio_against_loops():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (2, 8, 12), generator=g)
    labels[0, :4, :4] = 1  # a pure block
    labels[1, 0, :] = 255
    near = downsample_labels(labels, (4, 6), 'nearest')
    assert torch.equal(near, labels[:, ::2, ::2])
    ratio = downsample_labels(labels, (4, 6), 'ratio', 3, 255, 0.75)
    for b in range(2):
        for y in range(4):
            for x in range(6):
                block = labels[b, 2 * y:2 * y + 2, 2 * x:2 * x + 2].flatten()
                values, counts = block.unique(return_counts=True)
                best = int(values[counts.argmax()])
                share = int(counts.max()) / 4
                if counts.eq(counts.max()).sum() > 1:
                    continue  # tie: argmax order is an implementation detail
                expect = best if best != 255 and share >= 0.75 else 255
                assert int(ratio[b, y, x]) == expect, (b, y, x)
    assert int(ratio[0, 0, 0]) == 1
    with pytest.raises(ValueError, match='integer stride'):
        downsample_labels(labels, (3, 5), 'ratio', 3)


def test_class_weights_formula_on_hand_made_performance():
    r = torch.tensor([0.2, 0.6, 0.9, 0.5])
    present = torch.tensor([True, True, False, True])
    w = class_weights_from_performance(r, present, gamma=1.0)
    mean = (0.8 + 0.4 + 0.5) / 3
    assert torch.allclose(w, torch.tensor([0.8, 0.4, 0.1, 0.5]) / mean)
    assert w[present].mean().item() == pytest.approx(1.0)
    w2 = class_weights_from_performance(r, present, gamma=2.0)
    mean2 = (0.64 + 0.16 + 0.25) / 3
    assert torch.allclose(w2, torch.tensor([0.64, 0.16, 0.01, 0.25]) / mean2)
    # the worst present class weighs most
    assert int(w[present].argmax()) == 0
    assert torch.equal(
        class_weights_from_performance(torch.ones(4), present), torch.ones(4))
    assert torch.equal(
        class_weights_from_performance(r, torch.zeros(4, dtype=torch.bool)),
        torch.ones(4))


def test_performance_estimate_ema():
    method = T2S(**{k: v for k, v in t2s_cfg().items() if k != 'type'},
                 perf_momentum=0.9)
    method.update_performance(torch.tensor([3., 0., 1., 0.]),
                              torch.tensor([4., 0., 2., 0.]))
    assert torch.allclose(method.perf_estimate,
                          torch.tensor([0.75, 0., 0.5, 0.]))
    assert method.perf_initialized.tolist() == [True, False, True, False]
    method.update_performance(torch.tensor([1., 2., 0., 0.]),
                              torch.tensor([4., 4., 0., 0.]))
    expected = [0.9 * 0.75 + 0.1 * 0.25, 0.5, 0.5, 0.0]
    assert torch.allclose(method.perf_estimate, torch.tensor(expected))


def test_enqueue_is_fifo_with_wrap_around():
    length, dim = 5, 2
    queue = torch.zeros(2, length, dim)
    ptr = torch.zeros(2, dtype=torch.long)
    fill = torch.zeros(2, dtype=torch.long)
    ref = deque(maxlen=length)
    counter = 0
    for k in (2, 0, 2, 3, 7, 1):
        keys = torch.arange(counter, counter + k).float()[:, None].repeat(
            1, dim)
        counter += k
        T2S.enqueue(queue, ptr, fill, 1, keys)
        ref.extend(keys[:, 0].tolist())
        assert int(fill[1]) == len(ref)
        # ring order: the oldest entry sits at the pointer once full
        stored = queue[1, :, 0].tolist()
        if int(fill[1]) == length:
            start = int(ptr[1])
            stored = stored[start:] + stored[:start]
        else:
            stored = stored[:int(fill[1])]
        assert stored == list(ref)
    assert queue[0].abs().sum() == 0 and int(fill[0]) == 0


def test_negative_pools_use_queues_and_fall_back_to_in_batch_keys():
    method = T2S(**{k: v for k, v in t2s_cfg(queue_length=4).items()
                    if k != 'type'})
    state = method.queue_state('source')
    state['queue_fill'][:] = torch.tensor([4, 0, 2, 0])
    inbatch_len = torch.tensor([1, 3, 2, 0])
    pools = method._negative_pools(state, inbatch_len)
    bank_queue = 4 * 4
    # class 1's queue is empty: its in-batch keys (positions 1..3 of the
    # in-batch block) are used; class 3 has neither
    assert pools[0].tolist() == [bank_queue + 1, bank_queue + 2,
                                 bank_queue + 3, 8, 9]
    assert pools[1].tolist() == [0, 1, 2, 3, 8, 9]
    assert pools[3].tolist() == [0, 1, 2, 3, bank_queue + 1, bank_queue + 2,
                                 bank_queue + 3, 8, 9]


def test_projection_head_shapes_norm_and_errors():
    head = ProjectionHead(in_channels=2048)  # DeepLab-V2 layer4 feature
    out = head(torch.randn(2, 2048, 3, 5))
    assert out.shape == (2, 128, 3, 5) and out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=1), torch.ones(2, 3, 5), atol=1e-5)
    with pytest.raises(ValueError, match='in_channels'):
        head(torch.randn(2, 256, 3, 5))


def test_projection_ema_follows_the_teacher_rule():
    method = T2S(**{k: v for k, v in t2s_cfg().items() if k != 'type'},
                 projection_ema_alpha=0.9)
    ema, cur = method.proj_head_ema, method.proj_head
    w = lambda m: m.out.weight.detach().clone()  # noqa: E731
    method.update_projection_ema(0)  # copy
    assert torch.equal(w(ema), w(cur))
    expected = w(ema)
    for it in (1, 2, 3, 30):
        with torch.no_grad():
            cur.out.weight.add_(torch.randn_like(cur.out.weight))
        a = ema_momentum(it, 0.9)
        assert a == min(1 - 1 / (it + 1), 0.9)
        expected = a * expected + (1 - a) * w(cur)
        method.update_projection_ema(it)
        method.update_projection_ema(it)  # a second call is a no-op
        assert torch.allclose(w(ema), expected, atol=1e-6)
    assert int(method.projection_ema_iter) == 30
    assert all(not p.requires_grad for p in ema.parameters())


def test_contrast_against_hand_computation_and_prototype_ema():
    """Two classes whose keys are identical within a class: every sampled
    negative of class c is the other class's key, so ℓ_c has a closed
    form; weights from hand-set r_c; EMA prototypes on the second call."""
    tau = 0.1
    method = T2S(**{k: v for k, v in t2s_cfg(
        num_classes=2, num_queries=2, num_negatives=3,
        prototype_momentum=0.5,
        projection_head=dict(type='ProjectionHead', in_channels=8,
                             out_channels=3)).items() if k != 'type'})
    method.perf_estimate.copy_(torch.tensor([0.2, 0.6]))
    k = F.normalize(torch.tensor([[1., 0., 0.], [0.6, 0.8, 0.]]), dim=1)
    q = F.normalize(torch.randn(4, 3, generator=torch.Generator()
                                .manual_seed(0)), dim=1).requires_grad_()
    q_lab = torch.tensor([0, 1, 1, 0])
    keys = Samples(k[[0, 0, 0, 1, 1]], torch.tensor([0, 0, 0, 1, 1]))

    def expected_loss(protos, negs):
        w = torch.tensor([0.8, 0.4]) / 0.6
        total = 0.0
        for c in (0, 1):
            terms = []
            for i in torch.nonzero(q_lab == c).flatten():
                pos = torch.exp(q[i] @ protos[c] / tau)
                neg = 3 * torch.exp(q[i] @ negs[c] / tau)
                terms.append(-torch.log(pos / (pos + neg)))
            total = total + w[c] * torch.stack(terms).mean()
        return total / 2

    out = method.contrast('source', [Samples(q, q_lab)], [keys],
                          torch.Generator().manual_seed(1))
    ref = expected_loss(k, k[[1, 0]])
    assert out['loss'].item() == pytest.approx(ref.item(), rel=1e-5)
    assert out['present'].tolist() == [True, True]
    state = method.queue_state('source')
    assert state['queue_fill'].tolist() == [3, 2]
    assert torch.allclose(state['queue'][0, :3], k[[0, 0, 0]])
    assert torch.allclose(state['queue'][1, :2], k[[1, 1]])
    grad = torch.autograd.grad(out['loss'], q)[0]
    ref_grad = torch.autograd.grad(ref, q)[0]
    assert torch.allclose(grad, ref_grad, atol=1e-5)

    # second call: class-0 keys changed; prototype = normalise(½p + ½p')
    k0_new = F.normalize(torch.tensor([1., 0., 1.]), dim=0)
    keys2 = Samples(torch.stack([k0_new, k0_new, k[1]]),
                    torch.tensor([0, 0, 1]))
    out2 = method.contrast('source', [Samples(q, q_lab)], [keys2],
                           torch.Generator().manual_seed(2))
    proto0 = F.normalize(0.5 * k[0] + 0.5 * k0_new, dim=0)
    assert torch.allclose(state['prototypes'][0], proto0, atol=1e-6)
    # negatives now come from the queues (class 1 still only k1; class 0's
    # queue holds k0 and k0_new, so check class 1's closed form only)
    pos = torch.exp(q[[1, 2]] @ k[1] / tau)
    assert out2['per_class_loss'][1].item() == pytest.approx(
        -torch.log(pos / (pos + 3 * torch.exp(q[[1, 2]] @ k[0] / tau)))
        .mean().item(), rel=1e-5)


# ------------------------------------------------------------- the model
def test_train_step_logs_updates_and_keeps_ema_head_out_of_optimizer():
    names = ['road', 'sidewalk', 'building', 'wall']
    model = build([t2s_cfg(class_names=names)])
    opt = optim(model)
    opt_ids = {id(p) for g in opt.param_groups for p in g['params']}
    method = model.methods[0]
    assert not opt_ids & {id(p) for p in method.proj_head_ema.parameters()}
    assert {id(p) for p in method.proj_head.parameters()} <= opt_ids
    before = copy.deepcopy(method.proj_head.state_dict())
    set_iter(0)
    log = model.train_step(random_uda_batch(), opt)
    for key in ('t2s.loss_t2s', 't2s.queue_fill', 't2s.present_classes',
                't2s.pos_sim', 't2s.neg_sim', 't2s.contrast.road',
                't2s.w.road', 't2s.perf_mean'):
        assert key in log and torch.isfinite(log[key]), key
    assert log['loss'].item() == pytest.approx(
        (log['src.loss_ce'] + log['t2s.loss_t2s']).item(), rel=1e-5)
    assert log['t2s.present_classes'].item() == 4
    assert log['t2s.queue_fill'].item() == pytest.approx(8 / 32)
    assert not torch.equal(before['out.weight'],
                           method.proj_head.out.weight)
    assert method.perf_initialized.all()


@pytest.mark.parametrize('direction', ['t2s', 's2t', 'both'])
def test_direction_switch_routes_gradients(direction):
    """t2s: only the stylised (target-side) student forward gets gradient;
    s2t: only the source student feature; both: both. Keys (teacher, EMA
    head) never get gradient."""
    model = build([t2s_cfg(direction=direction)])
    set_iter(0)
    ctx = context(model, random_uda_batch())
    captured = []
    forward_student = ctx.forward_student

    def capture(img, with_feat=True):
        out = forward_student(img, with_feat)
        captured.append(out)
        return out

    ctx.forward_student = capture
    loss = model.methods[0].loss(ctx)['loss_t2s']
    src_feat = ctx.student_outputs('source').feat
    assert len(captured) == (0 if direction == 's2t' else 1)
    feats = [src_feat] + [c.feat for c in captured]
    grads = torch.autograd.grad(loss, feats, allow_unused=True,
                                retain_graph=True)
    src_grad = grads[0]
    styl_grad = grads[1] if captured else None
    gets = lambda g: g is not None and g.abs().sum() > 0  # noqa: E731
    assert gets(src_grad) == (direction in ('s2t', 'both'))
    assert gets(styl_grad) == (direction in ('t2s', 'both'))
    loss.backward()
    method = model.methods[0]
    assert all(p.grad is None for p in method.proj_head_ema.parameters())
    assert all(p.grad is None for p in model.teacher.parameters())
    assert method.proj_head.out.weight.grad.abs().sum() > 0
    sides = {'t2s': ['source'], 's2t': ['target'],
             'both': ['source', 'target']}[direction]
    for side in ('source', 'target'):
        assert hasattr(method, f'queue_{side}') == (side in sides)


def test_same_iteration_same_draws_other_iteration_other_draws():
    model = build([t2s_cfg()])
    batch = random_uda_batch()
    values = []
    for it in (5, 5, 6):
        clone = build([t2s_cfg()], state=model.state_dict())
        values.append(clone.methods[0].loss(context(clone, batch, it))
                      ['loss_t2s'].item())
    assert values[0] == values[1] and values[0] != values[2]


def test_stylised_ce_option_and_debug_image():
    model = build([t2s_cfg(stylised_ce_weight=0.5)])
    set_iter(0)
    ctx = context(model, random_uda_batch())
    ctx.debug = True
    captured = []
    forward_student = ctx.forward_student
    ctx.forward_student = lambda img, with_feat=True: captured.append(
        forward_student(img, with_feat)) or captured[-1]
    losses = model.methods[0].loss(ctx)
    ref = model.student.decode_head.loss_by_feat(
        captured[0].logits, ctx.data_samples['source'])['loss_ce']
    assert losses['loss_ce_stylised'].item() == pytest.approx(
        0.5 * ref.item(), rel=1e-5)
    img = ctx.debug_maps['stylised_source']
    assert img.dtype == torch.uint8 and img.shape == (2, 3, 32, 32)


def test_dg_mode_runs_on_a_source_only_batch():
    model = build([
        t2s_cfg(dg_mode=True, style=dict(type='RandomStyleTransfer',
                                         beta=0.05))
    ])
    assert model.methods[0].perf_metric == 'stylised_iou'
    batch = random_uda_batch()
    for key in ('inputs', 'data_samples'):
        batch[key].pop('target')
    set_iter(0)
    log = model.train_step(batch, optim(model))
    assert torch.isfinite(log['t2s.loss_t2s']) and log['t2s.loss_t2s'] > 0
    assert model.methods[0].perf_initialized.any()


def test_configuration_errors_are_clear():
    base = {k: v for k, v in t2s_cfg().items() if k != 'type'}
    with pytest.raises(ValueError, match='RandomStyleTransfer'):
        T2S(**dict(base, dg_mode=True))
    with pytest.raises(ValueError, match='direction'):
        T2S(**dict(base, direction='sideways'))
    with pytest.raises(ValueError, match='class_names'):
        T2S(**dict(base, class_names=['a']))
    model = build([t2s_cfg()])
    batch = random_uda_batch()
    for key in ('inputs', 'data_samples'):
        batch[key].pop('target')
    with pytest.raises(ValueError, match='dg_mode=True'):
        model.methods[0].loss(context(model, batch))


def test_target_pseudo_queries():
    """Option 1b: confident target pixels (threshold 0 here, so all) join
    the queries; the student's target forward gets gradient."""
    model = build([t2s_cfg(target_side='both', pseudo_threshold=0.0)])
    assert 'target' in model._student_domains()
    set_iter(0)
    ctx = context(model, random_uda_batch())
    loss = model.methods[0].loss(ctx)['loss_t2s']
    grad = torch.autograd.grad(loss, ctx.student_outputs('target').feat)[0]
    assert grad.abs().sum() > 0


def test_state_dict_round_trip_makes_resume_exact():
    cfg = t2s_cfg(prototype_momentum=0.9)
    plain_sgd = dict(optimizer=dict(type='SGD', lr=0.1))
    batches = [random_uda_batch(seed=s) for s in range(3)]
    model = build([cfg])
    opt = optim(model, plain_sgd)
    for it in (0, 1):
        set_iter(it)
        model.train_step(copy.deepcopy(batches[it]), opt)
    saved = copy.deepcopy(model.state_dict())
    prefix = 'methods.0.'
    for name in ('queue_source', 'queue_ptr_source', 'queue_fill_source',
                 'prototypes_source', 'prototype_valid_source',
                 'perf_estimate', 'perf_initialized', 'class_weights',
                 'projection_ema_iter', 'proj_head_ema.out.weight'):
        assert prefix + name in saved, name
    assert saved[prefix + 'queue_fill_source'].tolist() == [16] * 4
    assert int(saved[prefix + 'projection_ema_iter']) == 1
    set_iter(2)
    log_a = model.train_step(copy.deepcopy(batches[2]), opt)
    resumed = build([cfg], seed=1, state=saved)
    log_b = resumed.train_step(copy.deepcopy(batches[2]),
                               optim(resumed, plain_sgd))
    for key in log_a:
        assert torch.equal(log_a[key], log_b[key]), key
    state_a, state_b = model.state_dict(), resumed.state_dict()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
