"""CUDA checks (skipped, with the reason printed, on a machine without a GPU;
run by default where one is visible; ``tools/analysis/device_check.sh``
runs them on a GPU machine):

- one training step of every method in float32, float16 (AmpOptimWrapper,
  loss scaling) and bfloat16 (BF16AmpOptimWrapper): finite losses, each
  within a stated tolerance of the float32 step on the same batch;
- the same step on the GPU equals the CPU float32 step (TF32 off);
- a one-process NCCL run through tools/dist_train.sh (train + validate +
  checkpoint);
- exact resume on the GPU for an adversarial and a teacher method;
- benchmark.py on the GPU reports CUDA peak memory.
"""
import copy
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.logging import MessageHub

from e2e_utils import assert_resume_exact, make_tiny_uda_data, \
    tiny_runner_cfg
from mmseg_uda.engine.optimizers import UDAOptimWrapperConstructor
from mmseg_uda.engine.precision import BF16AmpOptimWrapper, set_amp_dtype
from test_precision import METHODS, _build
from uda_utils import random_uda_batch

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason='needs a CUDA GPU (run tools/analysis/device_check.sh on a GPU '
    'machine)')

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
NUM_CLASSES = 4
# Tolerance (rtol, atol) of a mixed-precision step's losses against the
# float32 step (same init, same batch): float16 keeps 11 significant bits,
# bfloat16 8. On CPU autocast the bf16 differences measured at most 3e-3
# absolute (PLCA) and test_precision uses (0.01, 0.01); GPU kernels
# (cuDNN algorithm choice, TF32 off here) get twice that for bf16.
TOLERANCE = dict(float16=(0.01, 0.01), bfloat16=(0.02, 0.02))


def _gpu_step(name, dtype, state, device='cuda'):
    methods, optim = METHODS[name]
    model = _build(methods, state).to(device)
    cfg = copy.deepcopy(optim)
    if dtype != 'float32':
        set_amp_dtype(cfg, dtype)
    wrapper = UDAOptimWrapperConstructor(cfg)(model)
    MessageHub.get_current_instance().update_info('iter', 0)
    batch = random_uda_batch(batch_size=2, h=64, w=64,
                             num_classes=NUM_CLASSES, seed=0)
    log_vars = model.train_step(batch, wrapper)
    return model, wrapper, {k: float(v) for k, v in log_vars.items()}


def _loss_keys(log_vars):
    return [k for k in log_vars if k.startswith('loss') or '.loss' in k]


@pytest.fixture(autouse=True)
def no_tf32():
    """Exact float32 reference: TF32 off for the comparisons."""
    before = (torch.backends.cuda.matmul.allow_tf32,
              torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, \
        torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize('name', sorted(METHODS))
def test_gpu_step_of_every_method_fp32_fp16_bf16(name):
    state = _build(METHODS[name][0]).state_dict()
    _, _, fp32 = _gpu_step(name, 'float32', state)
    keys = _loss_keys(fp32)
    assert keys
    for dtype, (rtol, atol) in TOLERANCE.items():
        model, wrapper, amp = _gpu_step(name, dtype, state)
        wrappers = wrapper.values() if hasattr(wrapper, 'values') \
            else [wrapper]
        kind = 'AmpOptimWrapper' if dtype == 'float16' else \
            'BF16AmpOptimWrapper'
        assert all(type(w).__name__ == kind for w in wrappers)
        if dtype == 'bfloat16':
            assert all(isinstance(w, BF16AmpOptimWrapper) for w in wrappers)
        for key in keys:
            a, b = fp32[key], amp[key]
            assert torch.isfinite(torch.tensor(b)), (dtype, key)
            assert abs(a - b) <= atol + rtol * abs(a), (dtype, key, a, b)
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                assert value.dtype == torch.float32, (dtype, key)
                assert torch.isfinite(value).all(), (dtype, key)


@pytest.mark.parametrize('name', ['source_only', 'advent', 'plca'])
def test_gpu_fp32_step_equals_cpu_step(name):
    state = _build(METHODS[name][0]).state_dict()
    _, _, gpu = _gpu_step(name, 'float32', state, 'cuda')
    _, _, cpu = _gpu_step(name, 'float32', state, 'cpu')
    for key in _loss_keys(cpu):
        assert abs(gpu[key] - cpu[key]) <= 1e-4 + 1e-4 * abs(cpu[key]), \
            (key, gpu[key], cpu[key])


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('tiny_uda_gpu')
    make_tiny_uda_data(str(root))
    return str(root)


ADV_OPTIM = dict(
    constructor='UDAOptimWrapperConstructor',
    segmentor=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
    discriminator=dict(optimizer=dict(type='Adam', lr=1e-4,
                                      betas=(0.9, 0.99))))


def test_dist_train_one_process_nccl(data_root, tmp_path):
    work = tmp_path / 'work'
    cfg = tiny_runner_cfg(
        data_root, str(work), max_iters=2, val_interval=2,
        methods=[dict(type='AdvEnt', num_classes=19)], optim=ADV_OPTIM,
        with_bn=True)
    cfg.env_cfg = dict(cudnn_benchmark=True, dist_cfg=dict(backend='nccl'))
    cfg.log_level = 'INFO'
    cfg.custom_imports = dict(imports=['mmseg_uda', 'uda_utils'],
                              allow_failed_imports=False)
    path = tmp_path / 'tiny.py'
    cfg.dump(str(path))
    env = dict(os.environ, PYTHONPATH=f'{REPO}:{osp.join(REPO, "tests")}',
               OMP_NUM_THREADS='1', PORT=str(29500 + os.getpid() % 1000))
    proc = subprocess.run(['bash', 'tools/dist_train.sh', str(path), '1',
                           '--amp-dtype', 'bfloat16'],
                          cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert osp.isfile(work / 'iter_2.pth')
    logs = [osp.join(work, d, f'{d}.log') for d in os.listdir(work)
            if osp.isfile(osp.join(work, d, f'{d}.log'))]
    log = open(logs[0]).read()
    assert 'Distributed training: True' in log
    assert "backend='nccl'" in log or 'nccl' in log
    assert 'mIoU16: ' in log
    ckpt = torch.load(work / 'iter_2.pth', map_location='cpu',
                      weights_only=False)
    assert 'loss_scaler' not in ckpt['optimizer']['segmentor']


# CUDA backward kernels of bilinear upsampling accumulate with atomics in a
# nondeterministic order, so two identical GPU runs differ by float32
# rounding (~1e-7); resume must not add more than that.
RESUME_ATOL = 1e-5


@pytest.mark.parametrize('case', ['advent', 'self_training+t2s'])
def test_resume_is_exact_on_gpu(case, data_root, tmp_path):
    from test_train_e2e import METHOD_CASES
    if case == 'advent':
        spec = dict(methods=[dict(type='AdvEnt', num_classes=19)],
                    optim=ADV_OPTIM, hooks=[], bn=False, extra={})
    else:
        spec = METHOD_CASES[case]
    cfg = tiny_runner_cfg(
        data_root, str(tmp_path), max_iters=4, methods=spec['methods'],
        optim=spec['optim'], custom_hooks=spec['hooks'],
        with_bn=spec['bn'], model_extra=spec['extra'])
    state = assert_resume_exact(cfg, 4, tmp_path, atol=RESUME_ATOL)
    assert any(k.startswith('optim') for k in state)


def test_benchmark_reports_cuda_memory(tmp_path):
    out = tmp_path / 'bench.json'
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, 'tools/analysis/benchmark.py',
         'configs/demo/advent.py', '--crop', '64', '64', '--batch-size', '1',
         '--warmup', '1', '--iters', '2', '--device', 'cuda',
         '--amp-dtype', 'bfloat16', '--json', str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result['method']['memory_kind'] == 'cuda_max_allocated'
    assert result['method']['cuda'] == torch.version.cuda
    assert result['amp_dtype'] == 'bfloat16'
    assert result['method']['peak_memory_mb'] > 0
