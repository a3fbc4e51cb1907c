"""Local checkpoints load with ``weights_only=True`` and the allow-list of
mmengine checkpoint types; anything else is refused unless trusted
(--trust-checkpoint / cfg trust_checkpoint / MMSEG_UDA_TRUST_CHECKPOINT),
and the mmcv.ops shim touches nothing when full mmcv is installed."""
import importlib.util
import os
import os.path as osp
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint

from e2e_utils import make_tiny_uda_data, tiny_runner_cfg, train
from mmseg_uda.compat import (TRUST_CHECKPOINT_ENV, UntrustedCheckpointError,
                              load_local_checkpoint)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _leave_marker(path):
    """What the pickled payload runs: harmless, but visible."""
    with open(path, 'w') as f:
        f.write('unpickled')
    return 'payload ran'


class Payload:
    """Unpickling calls ``_leave_marker(path)`` (a stand-in for code an
    attacker would run)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return _leave_marker, (self.path, )


class ShellPayload:
    """The classic attack: unpickling calls os.system. Only ever refused
    here (never loaded with full unpickling)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.system, (f'touch {self.path}', )


class GetattrPayload:
    """Abuses the getattr that HistoryBuffer pickles need."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


@pytest.fixture(autouse=True)
def untrusted(monkeypatch):
    monkeypatch.delenv(TRUST_CHECKPOINT_ENV, raising=False)


def save_with(tmp_path, payload, name='evil.pth'):
    path = str(tmp_path / name)
    torch.save(dict(state_dict=dict(w=torch.ones(2)),
                    meta=dict(note=payload)), path)
    return path


@pytest.mark.parametrize('kind', ['class instance', 'os.system'])
def test_pickled_code_is_refused_by_default(tmp_path, kind):
    marker = tmp_path / 'marker'
    payload = Payload(str(marker)) if kind == 'class instance' else \
        ShellPayload(str(marker))
    path = save_with(tmp_path, payload)
    with pytest.raises(UntrustedCheckpointError) as err:
        CheckpointLoader.load_checkpoint(path, map_location='cpu')
    message = str(err.value)
    assert f'"{path}"' in message
    expected = 'test_safe_checkpoint._leave_marker' \
        if kind == 'class instance' else 'system'
    assert expected in message, message
    for opt_in in ('--trust-checkpoint', 'trust_checkpoint = True',
                   f'{TRUST_CHECKPOINT_ENV}=1'):
        assert opt_in in message
    assert not marker.exists()
    # mmengine's own entry point (Pretrained init_cfg, Runner.load_checkpoint)
    with pytest.raises(UntrustedCheckpointError):
        _load_checkpoint(path, map_location='cpu')
    assert not marker.exists()


def test_pickled_object_is_accepted_when_trusted(tmp_path, monkeypatch):
    marker = tmp_path / 'marker'
    path = save_with(tmp_path, Payload(str(marker)))
    monkeypatch.setenv(TRUST_CHECKPOINT_ENV, '1')
    ckpt = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    assert ckpt['meta']['note'] == 'payload ran'
    assert marker.read_text() == 'unpickled'
    monkeypatch.setenv(TRUST_CHECKPOINT_ENV, '0')
    with pytest.raises(UntrustedCheckpointError):
        load_local_checkpoint(path)


def test_getattr_is_limited_to_history_buffer_statistics(tmp_path):
    path = save_with(tmp_path, GetattrPayload())
    with pytest.raises(UntrustedCheckpointError, match='__init__'):
        load_local_checkpoint(path)
    buffer = HistoryBuffer([1.0, 3.0], [1, 1])
    path = save_with(tmp_path, buffer, 'buffer.pth')
    loaded = load_local_checkpoint(path)['meta']['note']
    assert loaded.mean() == 2.0 and loaded.statistics('max') == 3.0


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothing.pth'):
        load_local_checkpoint(str(tmp_path / 'nothing.pth'))


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('tiny_uda_ckpt')
    make_tiny_uda_data(str(root))
    return str(root)


def equal_trees(a, b, path='ckpt'):
    assert type(a) is type(b), path
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for key in a:
            equal_trees(a[key], b[key], f'{path}.{key}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            equal_trees(x, y, f'{path}[{i}]')
    elif isinstance(a, HistoryBuffer):
        equal_trees(vars(a), vars(b), f'{path}.__dict__')
    else:
        assert a == b, path


def test_runner_checkpoint_loads_safely_and_completely(data_root, tmp_path):
    """A real Runner checkpoint with two optimizers (segmentor SGD,
    discriminator Adam), a scheduler and the message hub: the safe loader
    returns exactly what full unpickling returns, and the file does need
    the allow-list (plain weights_only=True refuses it)."""
    optim = dict(
        constructor='UDAOptimWrapperConstructor',
        segmentor=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        discriminator=dict(optimizer=dict(type='Adam', lr=1e-4)))
    cfg = tiny_runner_cfg(
        data_root, str(tmp_path), max_iters=2, val_interval=2,
        checkpoint_interval=2, optim=optim,
        methods=[dict(type='AdvEnt', num_classes=19)])
    train(cfg)
    path = str(tmp_path / 'iter_2.pth')
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, map_location='cpu', weights_only=True)
    full = torch.load(path, map_location='cpu', weights_only=False)
    safe = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    assert {'state_dict', 'optimizer', 'param_schedulers',
            'message_hub', 'meta'} <= set(safe)
    assert set(safe['optimizer']) == {'segmentor', 'discriminator'}
    equal_trees(full, safe)


def run_tool(args, env_extra=None):
    env = dict(os.environ, PYTHONPATH=f'{REPO}:{osp.join(REPO, "tests")}',
               OMP_NUM_THREADS='1')
    env.pop(TRUST_CHECKPOINT_ENV, None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable] + args, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_test_cli_refuses_untrusted_and_obeys_the_opt_ins(data_root,
                                                          tmp_path):
    cfg = tiny_runner_cfg(data_root, str(tmp_path / 'work'))
    # the tiny test backbone lives in tests/uda_utils.py
    cfg.custom_imports = dict(imports=['mmseg_uda', 'uda_utils'],
                              allow_failed_imports=False)
    config = str(tmp_path / 'tiny.py')
    cfg.dump(config)
    marker = tmp_path / 'marker'
    ckpt = save_with(tmp_path, Payload(str(marker)))
    proc = run_tool(['tools/test.py', config, ckpt])
    assert proc.returncode != 0
    assert 'Refused to unpickle checkpoint' in proc.stderr
    assert '--trust-checkpoint' in proc.stderr and not marker.exists()
    for extra in (['--trust-checkpoint'],
                  ['--cfg-options', 'trust_checkpoint=True']):
        proc = run_tool(['tools/test.py', config, ckpt] + extra)
        assert marker.exists(), (extra, proc.stderr[-2000:])
        marker.unlink()


@pytest.mark.parametrize('tool', ['train.py', 'test.py'])
def test_both_tools_parse_the_flag(tool, monkeypatch):
    spec = importlib.util.spec_from_file_location(
        f'tool_{tool[:-3]}', osp.join(REPO, 'tools', tool))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = [tool, 'cfg.py'] + (['ckpt.pth'] if tool == 'test.py' else [])
    monkeypatch.setattr(sys, 'argv', argv)
    assert module.parse_args().trust_checkpoint is False
    monkeypatch.setattr(sys, 'argv', argv + ['--trust-checkpoint'])
    assert module.parse_args().trust_checkpoint is True


SHIM_CHECK = textwrap.dedent('''
    import importlib.util, sys, types
    spec = importlib.util.spec_from_file_location(
        'compat_under_test', 'mmseg_uda/compat.py')
    compat = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compat)
    import mmcv
    if sys.argv[1] == 'full':
        sys.modules['mmcv._ext'] = types.ModuleType('mmcv._ext')
    sentinel = sys.modules.get('mmcv.ops', 'absent')
    attr = getattr(mmcv, 'ops', 'absent')
    installed = compat.install_mmcv_ops_shim()
    after = sys.modules.get('mmcv.ops', 'absent')
    print(installed, after is sentinel,
          getattr(mmcv, 'ops', 'absent') is attr,
          getattr(after, '_mmseg_uda_shim', False))
''')


@pytest.mark.parametrize('mmcv_kind, expected', [
    ('full', 'False True True False'),   # compiled ops present: untouched
    ('lite', 'True False False True'),   # control: mmcv-lite gets the shim
])
def test_mmcv_ops_shim_touches_nothing_with_full_mmcv(mmcv_kind, expected):
    proc = subprocess.run(
        [sys.executable, '-c', SHIM_CHECK, mmcv_kind], cwd=REPO,
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == expected
