"""Run a function in N CPU processes over gloo (torch.multiprocessing), and
compare W-process training on the batches :class:`UDAPairSampler` hands each
rank with 1-process training on the global batch the same sampler hands out
with world_size 1."""
import contextlib
import copy
import itertools
import os
import shutil
import tempfile
from typing import Callable, Dict, List, NamedTuple, Optional

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmengine.dataset import Compose, pseudo_collate
from mmengine.logging import MessageHub
from torch.utils.data import DataLoader


def file_init_method(directory) -> str:
    """A rendezvous through a file in ``directory``: unlike probing for a
    free TCP port, nothing can take it between the probe and the bind."""
    return 'file://' + os.path.join(directory, 'rendezvous')


def _entry(rank, world_size, init_method, fn, args):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    dist.init_process_group('gloo', init_method=init_method, rank=rank,
                            world_size=world_size)
    try:
        import torch
        from mmengine.registry import init_default_scope

        import mmseg_uda  # noqa: F401
        init_default_scope('mmseg')
        torch.set_num_threads(1)
        fn(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def run_distributed(fn, world_size, *args):
    """Call ``fn(rank, world_size, *args)`` in ``world_size`` processes with
    an initialised gloo process group; raises if any process fails."""
    directory = tempfile.mkdtemp(prefix='mmseg_uda_gloo_')
    try:
        mp.spawn(_entry,
                 args=(world_size, file_init_method(directory), fn, args),
                 nprocs=world_size, join=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# ---------------------------------------------------------------------------
# Data as users get it: UDADataset + UDAPairSampler + DataLoader
# ---------------------------------------------------------------------------
class InMemoryDomain:
    """One domain's dataset (what :class:`UDADataset` wraps) over packed
    items ``dict(inputs=CHW uint8, data_samples=SegDataSample)``; the
    pipeline is empty because the items are already packed."""

    def __init__(self, items, classes):
        self.items = list(items)
        self.metainfo = dict(classes=tuple(classes))
        self.pipeline = Compose([])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return copy.deepcopy(self.items[index])


def uda_dataset(source_items, target_items=None, num_classes=4):
    """A :class:`UDADataset` over item lists (``target_items=None``: source
    only, as the DG configs). Every item's ``img_path`` names its domain and
    index so a batch shows which samples it holds."""
    from mmseg_uda.datasets import UDADataset
    classes = [str(c) for c in range(num_classes)]
    for domain, items in (('source', source_items),
                          ('target', target_items or [])):
        for i, item in enumerate(items):
            item['data_samples'].set_metainfo(
                dict(img_path=f'{domain}_{i}.png'))
    target = None if target_items is None else InMemoryDomain(
        target_items, classes)
    return UDADataset(
        source=InMemoryDomain(source_items, classes), target=target)


def random_items(num, h, w, num_classes, with_label, seed):
    from uda_utils import random_sample
    g = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(num):
        img, sample = random_sample(h, w, num_classes, with_label, g)
        items.append(dict(inputs=img, data_samples=sample))
    return items


def sampler_batches(dataset, batch_size, iterations, seed=0):
    """The first ``iterations`` batches the Runner's DataLoader gives this
    process: ``UDAPairSampler`` (rank and world size of the current process
    group, or 0 and 1 without one), ``batch_size`` per process,
    ``pseudo_collate``."""
    from mmseg_uda.datasets.samplers import UDAPairSampler
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=UDAPairSampler(dataset, seed=seed),
        collate_fn=pseudo_collate,
        num_workers=0)
    return list(itertools.islice(loader, iterations))


def sample_names(batch, domain='source'):
    return [s.img_path for s in batch['data_samples'][domain]]


# ---------------------------------------------------------------------------
# Training and what is compared
# ---------------------------------------------------------------------------
def record_gradients(model, optim):
    """Wrap each optimizer's ``step`` to keep a copy of the gradients it is
    about to apply (after DDP's all-reduce): [{name: grad} per iteration]."""
    names = {id(p): n for n, p in model.named_parameters()}
    record = []
    wrappers = optim.values() if hasattr(optim, 'values') else [optim]

    def wrap(wrapper):
        original = wrapper.step

        def step(**kwargs):
            grads = {
                names[id(p)]: p.grad.detach().clone()
                for group in wrapper.optimizer.param_groups
                for p in group['params'] if p.grad is not None
            }
            if not record or set(grads) & set(record[-1]):
                record.append({})
            record[-1].update(grads)
            return original(**kwargs)

        wrapper.step = step

    for wrapper in wrappers:
        wrap(wrapper)
    return record


def train(model, batches, optim_cfg, runner=None, ema_alpha=0.999):
    """Iterations 0, 1, ... on ``batches`` (with EMATeacherHook's teacher
    update after each when the model has a teacher); returns the final
    state, the gradients of every step, the logged values and the source
    samples seen."""
    from mmseg_uda.engine.hooks import ema_momentum, ema_update
    from mmseg_uda.engine.optimizers import UDAOptimWrapperConstructor
    optim = UDAOptimWrapperConstructor(copy.deepcopy(optim_cfg))(model)
    grads = record_gradients(model, optim)
    hub = MessageHub.get_current_instance()
    logs = []
    for it, batch in enumerate(batches):
        hub.update_info('iter', it)
        log_vars = (runner or model).train_step(batch, optim)
        logs.append({k: float(v) for k, v in log_vars.items()})
        if getattr(model, 'teacher', None) is not None:
            ema_update(model.teacher, model.student,
                       ema_momentum(it + 1, ema_alpha))
    return dict(state=model.state_dict(), grads=grads, logs=logs,
                samples=[sample_names(b) for b in batches])


class Run(NamedTuple):
    """One training run compared between W processes and 1 process.

    ``build(state)`` makes the model (state None: a fresh one, whose state
    both sides then load); ``control(model)`` is a context manager applied
    in the W processes only (a negative control removing a cross-process
    reduction or restoring another numbering), or None."""
    build: Callable
    optim: dict
    dataset: object
    batch_size: int  # per process
    iterations: int = 2
    control: Optional[Callable] = None
    default_dtype: torch.dtype = torch.float32


@contextlib.contextmanager
def default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _ddp_worker(rank, world_size, runs, inits, out):
    from mmseg_uda.engine import UDADistributedDataParallel
    results = {}
    for name, run in runs.items():
        with default_dtype(run.default_dtype):
            model = run.build(inits[name])
            control = run.control(model) if run.control is not None \
                else contextlib.nullcontext()
            with control:
                ddp = UDADistributedDataParallel(
                    module=model, broadcast_buffers=False)
                batches = sampler_batches(run.dataset, run.batch_size,
                                          run.iterations)
                results[name] = train(model, batches, run.optim, ddp)
    torch.save(results, f'{out}.{rank}')


def compare_runs(runs: Dict[str, Run], tmpdir, world_size=2) -> dict:
    """Each run with ``world_size`` gloo processes (one spawn for all runs)
    and with 1 process on the global batch (batch size × world_size from
    the same sampler with world_size 1).

    Returns {name: dict(init=state, single=result, ranks=[result per
    rank])}, results as :func:`train` returns them."""
    inits, singles = {}, {}
    for name, run in runs.items():
        with default_dtype(run.default_dtype):
            inits[name] = run.build(None).state_dict()
            batches = sampler_batches(run.dataset,
                                      run.batch_size * world_size,
                                      run.iterations)
            singles[name] = train(run.build(inits[name]), batches, run.optim)
    out = os.path.join(str(tmpdir), 'ddp.pth')
    run_distributed(_ddp_worker, world_size, runs, inits, out)
    ranks = [torch.load(f'{out}.{r}') for r in range(world_size)]
    return {
        name: dict(init=inits[name], single=singles[name],
                   ranks=[r[name] for r in ranks])
        for name in runs
    }


def assert_sampler_split(result, world_size=2):
    """Rank r held the global samples r, r + W, ... of the 1-process run
    (the sampler's split; not contiguous halves)."""
    for it, names in enumerate(result['single']['samples']):
        for rank, got in enumerate(result['ranks']):
            assert got['samples'][it] == names[rank::world_size], (it, rank)
        assert result['ranks'][0]['samples'][it] != \
            names[:len(names) // world_size]


def _module_group(name):
    parts = name.split('.')
    return '.'.join(parts[:3]) if parts[0] == 'methods' else parts[0]


def group_gradient_errors(single, other) -> Dict[str, float]:
    """Per module (student, each method's sub-modules): the largest
    |Δgrad| over all steps, relative to the largest |grad| of that module in
    the same step, so a small discriminator gradient is not hidden by the
    segmentor's."""
    assert len(single) == len(other) > 0
    worst: Dict[str, float] = {}
    for step_single, step_other in zip(single, other):
        assert set(step_single) == set(step_other)
        scale, diff = {}, {}
        for key, grad in step_single.items():
            group = _module_group(key)
            scale[group] = max(scale.get(group, 0.0),
                               grad.abs().max().item())
            diff[group] = max(diff.get(group, 0.0),
                              (step_other[key] - grad).abs().max().item())
        for group in scale:
            assert scale[group] > 0, group  # every module gets gradients
            worst[group] = max(worst.get(group, 0.0),
                               diff[group] / scale[group])
    return worst


def gradient_error(single, other) -> float:
    """The largest of :func:`group_gradient_errors`."""
    return max(group_gradient_errors(single, other).values())


def state_error(single, other) -> float:
    """Largest |Δ| over the floating-point state (parameters and buffers:
    queues, prototypes, statistics); integer state counts as 0 if equal,
    inf otherwise."""
    worst = 0.0
    assert set(single) == set(other)
    for key, value in single.items():
        got = other[key]
        if value.is_floating_point():
            worst = max(worst, (got.double() - value.double()).abs().max()
                        .item() if value.numel() else 0.0)
        elif not torch.equal(got, value):
            return float('inf')
    return worst


def errors(result) -> List[dict]:
    """Per rank: gradient and state error against the 1-process run."""
    single = result['single']
    return [
        dict(grad=gradient_error(single['grads'], r['grads']),
             state=state_error(single['state'], r['state']))
        for r in result['ranks']
    ]


def assert_equal_to_single(result, grad_tol=1e-5, state_tol=1e-5,
                           moved_prefix='student.'):
    """Both ranks' gradients (every step) and final states equal the
    1-process run's, and training moved the parameters."""
    assert_sampler_split(result)
    for rank, err in enumerate(errors(result)):
        assert err['grad'] < grad_tol, (rank, err)
        assert err['state'] < state_tol, (rank, err)
    single, init = result['single']['state'], result['init']
    assert any(not torch.equal(v, init[k]) for k, v in single.items()
               if k.startswith(moved_prefix))


def assert_differs_from_single(result, grad_min=1e-3, state_min=1e-4):
    """The negative control: some rank departs from the 1-process run."""
    errs = errors(result)
    assert max(e['grad'] for e in errs) > grad_min, errs
    assert max(e['state'] for e in errs) > state_min, errs


@contextlib.contextmanager
def patched(*patches):
    """Set ``(obj, name, value)`` attributes for the duration."""
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    for obj, name, value in patches:
        setattr(obj, name, value)
    try:
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


def no_all_reduce(tensor, *args, **kwargs):
    """Stand-in for ``mmengine.dist.all_reduce`` in negative controls."""
    return None


def no_gradient_sync(model):
    """Negative control: every train step inside ``DDP.no_sync()``, i.e.
    without the all-reduce of the gradients."""
    from mmseg_uda.engine import UDADistributedDataParallel as wrapper
    original = wrapper.train_step

    def train_step(self, data, optim_wrapper):
        with self.no_sync():
            return original(self, data, optim_wrapper)

    return patched((wrapper, 'train_step', train_step))


def rank_major_indices(local_size, device=None):
    """Negative-control numbering of a rank's samples: rank-major
    (r·n + i) instead of the sampler's g = i·world_size + r."""
    from mmengine.dist import get_rank
    return torch.arange(local_size, device=device) + get_rank() * local_size


def build_with_confident_teacher(model_cfg, state=None, teacher_scale=200.0):
    """``MODELS.build(model_cfg)`` from seed 0; without ``state``, a
    teacher copied from the student with its classifier scaled by
    ``teacher_scale`` (the init head is near-uniform: a confident teacher
    makes the pseudo-labels and their weight matter) and a student
    perturbed away from it; with ``state``, that state loaded."""
    from mmengine.config import ConfigDict

    from mmseg_uda.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(model_cfg))
    model.init_weights()
    if state is None:
        model.teacher.load_state_dict(model.student.state_dict())
        model.teacher_initialized.fill_(1)
        with torch.no_grad():
            model.teacher.decode_head.conv_seg.weight.mul_(teacher_scale)
            for p in model.student.parameters():
                p.add_(0.05 * torch.randn_like(p))
    else:
        model.load_state_dict(state)
    return model
