"""The one install for CPU and GPU: the requirement files never install or
replace torch, and with mmcv-lite (no compiled ops; ``mmcv._ext`` blocked
here, so this also holds where full mmcv is installed) every registered
component imports and every shipped config's model builds and runs."""
import glob
import importlib.metadata as metadata
import os
import os.path as osp
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from packaging.requirements import Requirement
from packaging.version import Version

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TORCH_NAMES = {'torch', 'torchvision', 'torchaudio'}
# What requirements/runtime.txt states as the minimum torch (kornia 0.9.0).
MIN_TORCH = Version('2.5.1')


def _requirement_lines(path, seen=None):
    """(file, Requirement) of a requirements file, following ``-r``."""
    seen = set() if seen is None else seen
    path = osp.normpath(path)
    if path in seen:
        return []
    seen.add(path)
    out = []
    with open(path) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if not line:
                continue
            if line.startswith('-r'):
                out += _requirement_lines(
                    osp.join(osp.dirname(path), line[2:].strip()), seen)
            else:
                out.append((osp.relpath(path, REPO), Requirement(line)))
    return out


def _canon(name):
    return re.sub(r'[-_.]+', '-', name).lower()


ALL_FILES = [osp.join(REPO, 'requirements.txt')] + sorted(
    glob.glob(osp.join(REPO, 'requirements', '*.txt')))


@pytest.mark.parametrize('path', ALL_FILES,
                         ids=[osp.relpath(p, REPO) for p in ALL_FILES])
def test_requirement_files_never_install_torch(path):
    reqs = _requirement_lines(path)
    assert reqs
    names = {_canon(r.name) for _, r in reqs}
    assert not names & TORCH_NAMES, (path, names & TORCH_NAMES)
    # mmcv-lite and full mmcv both provide the `mmcv` package
    assert not {'mmcv', 'mmcv-lite'} <= names
    if osp.basename(path) == 'cluster.txt':
        assert 'mmcv' in names
    elif 'mmcv' in names:
        pytest.fail(f'{path} installs full mmcv (only cluster.txt may)')


def test_default_install_is_mmcv_lite_for_cpu_and_gpu():
    names = {_canon(r.name)
             for _, r in _requirement_lines(osp.join(REPO,
                                                     'requirements.txt'))}
    assert 'mmcv-lite' in names and 'mmcv' not in names
    runtime = open(osp.join(REPO, 'requirements', 'runtime.txt')).read()
    assert f'torch>={MIN_TORCH}' in runtime  # the documented minimum


def _installed_requires(dist_name):
    try:
        requires = metadata.requires(dist_name) or []
    except metadata.PackageNotFoundError:
        return None
    env = {'extra': ''}
    return [r for r in map(Requirement, requires)
            if r.marker is None or r.marker.evaluate(env)]


def test_dependency_closure_keeps_an_installed_torch():
    """Walk the installed dependency closure of requirements.txt (and of
    the package itself): every requirement on torch is satisfied by the
    installed torch, so pip keeps it, and the tightest one is the
    documented minimum."""
    roots = [r for _, r in _requirement_lines(
        osp.join(REPO, 'requirements.txt'))]
    package = _installed_requires('mmseg_uda')
    if package is not None:  # `pip install -e .` done (CI)
        assert not {_canon(r.name) for r in package} & TORCH_NAMES
        assert not {_canon(r.name) for r in package} & {'mmcv', 'mmcv-lite'}
        roots += package
    todo, seen, torch_specs = list(roots), set(), []
    while todo:
        req = todo.pop()
        name = _canon(req.name)
        if name in TORCH_NAMES:
            torch_specs.append((req, name))
            continue
        if name in seen:
            continue
        seen.add(name)
        requires = _installed_requires(req.name)
        if requires is None:
            continue  # not installed here (e.g. an optional extra)
        todo += requires
    assert 'mmengine' in seen and 'mmsegmentation' in seen
    installed = Version(torch.__version__.split('+')[0])
    lower = [Version(s.version) for r, _ in torch_specs
             for s in r.specifier if s.operator in ('>=', '>', '==')]
    for req, _ in torch_specs:
        assert req.specifier.contains(installed, prereleases=True), req
        assert req.specifier.contains(MIN_TORCH, prereleases=True), req
    assert not lower or max(lower) == MIN_TORCH, lower


# ------------------------------------------------------ without mmcv._ext
# Runs in a fresh interpreter in which `import mmcv._ext` fails (as with
# mmcv-lite, whatever is installed) and every access to a name of the
# mmcv.ops shim that is not pure PyTorch is recorded.
PRELUDE = textwrap.dedent('''
    import importlib.abc, sys
    class BlockExt(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == 'mmcv._ext':
                raise ModuleNotFoundError("No module named 'mmcv._ext'")
    sys.meta_path.insert(0, BlockExt())
    import mmseg_uda  # noqa
    import mmcv
    ops = sys.modules['mmcv.ops']
    assert getattr(ops, '_mmseg_uda_shim', False), 'shim not installed'
    MISSES = []
    _missing = ops.__getattr__
    def __getattr__(name):
        if not name.startswith('__'):  # dunder probes of import machinery
            MISSES.append(name)
        return _missing(name)
    ops.__getattr__ = __getattr__
''')


def _run(body, timeout=900):
    env = dict(os.environ, PYTHONPATH=f'{REPO}:{osp.join(REPO, "tests")}',
               OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-c', PRELUDE + body], cwd=REPO,
                          env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_every_registered_component_imports_without_compiled_mmcv():
    out = _run(textwrap.dedent('''
        import importlib, inspect
        import mmseg.registry as R
        from mmengine.registry import Registry
        found = {}
        for attr in dir(R):
            registry = getattr(R, attr)
            if not isinstance(registry, Registry):
                continue
            for name, obj in registry.module_dict.items():
                module = getattr(obj, '__module__', '') or ''
                if not module.startswith('mmseg_uda'):
                    continue
                importlib.import_module(module)
                assert registry.get(name) is obj, (attr, name)
                found.setdefault(attr, []).append(name)
        from mmseg_uda.registry import ROOT_MODEL_WRAPPERS
        assert ROOT_MODEL_WRAPPERS.get('UDADistributedDataParallel')
        assert not MISSES, MISSES
        for attr in sorted(found):
            print(attr, len(found[attr]))
        print('TOTAL', sum(map(len, found.values())))
        # negative control: a compiled op is looked up, recorded and refused
        try:
            from mmcv.ops import CrissCrossAttention  # noqa
        except ModuleNotFoundError as error:
            print('REFUSED', 'mmcv-lite' in str(error), MISSES)
    '''))
    refused = [line for line in out.splitlines()
               if line.startswith('REFUSED')]
    assert refused == ["REFUSED True ['CrissCrossAttention']"], out
    counts = dict(line.split() for line in out.strip().splitlines()
                  if not line.startswith('REFUSED'))
    assert int(counts['TOTAL']) >= 40, counts
    for registry in ('MODELS', 'DATASETS', 'HOOKS', 'METRICS',
                     'DATA_SAMPLERS', 'OPTIM_WRAPPER_CONSTRUCTORS',
                     'OPTIM_WRAPPERS'):
        assert int(counts.get(registry, 0)) >= 1, (registry, counts)


CONFIGS = sorted(
    osp.relpath(p, REPO)
    for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'),
                       recursive=True) if '_base_' not in p)


def test_every_shipped_config_model_needs_no_compiled_mmcv_op():
    """Build every shipped config's model (pretrained weights off, SyncBN ->
    BN) and run each distinct student once on a 64x64 image: no module of
    ``mmcv.ops`` appears and no compiled op is looked up."""
    out = _run(textwrap.dedent(f'''
        import torch
        from mmengine.config import Config, ConfigDict
        from mmengine.registry import init_default_scope
        from mmseg_uda.registry import MODELS
        from uda_utils import to_plain_bn
        from test_configs import without_pretrained
        init_default_scope('mmseg')
        torch.manual_seed(0)

        def without_weight_files(node):
            # frozen helper networks that load user-supplied *_ckpt files
            # (StyleAugmentor) build with their random_weights option
            if isinstance(node, dict):
                node = {{k: without_weight_files(v) for k, v in node.items()}}
                if any(k.endswith('_ckpt') for k in node):
                    node = {{k: v for k, v in node.items()
                            if not k.endswith('_ckpt')}}
                    node['random_weights'] = True
                return node
            if isinstance(node, (list, tuple)):
                return type(node)(without_weight_files(v) for v in node)
            return node

        ran = {{}}
        for path in {CONFIGS!r}:
            cfg = Config.fromfile(path)
            model_cfg = to_plain_bn(without_weight_files(
                without_pretrained(cfg.model.to_dict())))
            model = MODELS.build(ConfigDict(model_cfg))
            compiled = sorted({{type(m).__name__ for m in model.modules()
                                if type(m).__module__.startswith('mmcv.ops')}})
            assert not compiled, (path, compiled)
            student = getattr(model, 'student', model)
            # one forward per student architecture (module types and size)
            key = (type(student).__name__, sorted({{type(m).__name__
                   for m in student.modules()}}).__repr__(),
                   sum(p.numel() for p in student.parameters()))
            if key not in ran:
                if hasattr(student, 'hr_slide_inference'):
                    # HRDA: the detail crop runs on the whole 64x64 image
                    # (same modules as the sliding window, which needs
                    # images of at least hr_crop_size)
                    student.hr_slide_inference = False
                student.eval()
                with torch.no_grad():
                    logits = student._forward(torch.rand(1, 3, 64, 64))
                logits = logits[0] if isinstance(logits, (list, tuple)) \\
                    else logits
                assert torch.isfinite(logits).all(), path
                ran[key] = path
            assert not MISSES, (path, MISSES)
            print('OK', path)
        print('STUDENTS', len(ran))
    '''))
    built = [line.split()[1] for line in out.splitlines()
             if line.startswith('OK ')]
    assert built == CONFIGS
    students = int(out.split('STUDENTS')[1].split()[0])
    assert students >= 4  # DeepLab-V2 R101 (two stems), MiT-B5, HRDA, R18
