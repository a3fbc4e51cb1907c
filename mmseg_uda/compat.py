"""Compatibility fixes the pinned OpenMMLab stack needs (applied on import).

Each fix says why it exists and when it can be removed. Nothing here copies
code from mmseg/mmcv/mmengine; the fixes wrap or replace single functions.

1. ``install_mmcv_ops_shim``: mmcv-lite has no compiled ``mmcv._ext`` but
   ``mmcv/ops/__init__.py`` loads it eagerly, and mmseg imports ``mmcv.ops``
   unguarded (``mmseg/utils/mask_classification.py``, ``point_sample.py``,
   ``san_head.py``, ``focal_loss.py``), so ``import mmseg.models`` fails.
   With full mmcv installed (``mmcv._ext`` locatable) the shim touches
   nothing. Remove when mmseg guards those imports or full mmcv wheels exist
   for the torch in use.
2. ``patch_checkpoint_loading``: torch>=2.6 defaults ``torch.load`` to
   ``weights_only=True`` and mmengine<=0.10.7 never widens its allow-list,
   but its checkpoints pickle ``HistoryBuffer`` (message hub) and numpy
   arrays/scalars/dtypes, so resume and ``load_from`` fail. The local-file
   loader is replaced by one that still loads with ``weights_only=True`` and
   allows exactly those types for the duration of the call
   (:func:`mmengine_checkpoint_safe_globals`; nothing is added to torch's
   process-wide allow-list). A file that needs anything else is refused
   (:class:`UntrustedCheckpointError`, naming the file and the opt-in) unless
   the user trusts it: ``--trust-checkpoint`` (tools/train.py,
   tools/test.py), ``trust_checkpoint = True`` in the config (read by those
   tools) or the environment variable ``MMSEG_UDA_TRUST_CHECKPOINT=1``;
   then it is fully unpickled (``weights_only=False``). Remove when
   mmengine loads its own checkpoints under ``weights_only=True`` with its
   types allow-listed (and offers a trust switch).
3. ``patch_cpu_distributed``: mmengine's ``_init_dist_pytorch`` calls
   ``torch.cuda.set_device`` unconditionally and defaults to NCCL, so
   ``--launcher pytorch`` cannot start on a CPU-only machine. Without CUDA
   we initialise a gloo process group instead. Remove when mmengine supports
   CPU launchers. (The DDP wrapper side, ``device_ids=None`` and BN instead of
   SyncBN on CPU, lives in ``UDADistributedDataParallel``.)
4. ``silence_expected_warnings``: two warnings every run prints with the
   pinned stack and that ask nothing of the user: mmcv-lite's "Fail to import
   MultiScaleDeformableAttention" (no compiled ops, none needed here) and
   setuptools' "pkg_resources is deprecated" (mmengine imports it; we pin
   setuptools<82 on purpose). Only these exact messages are filtered. Remove
   with fixes 1 and the setuptools pin.
"""
import importlib.util
import os
import os.path as osp
import pickle
import re
import sys
import types
import warnings

_APPLIED = False


def _full_mmcv_installed() -> bool:
    """Whether mmcv's compiled extension exists (located, not loaded)."""
    if sys.modules.get('mmcv._ext') is not None:
        return True
    try:
        return importlib.util.find_spec('mmcv._ext') is not None
    except (ImportError, ValueError):
        return False


def install_mmcv_ops_shim() -> bool:
    """Make ``mmcv.ops`` importable under mmcv-lite.

    Pure-PyTorch submodules (``point_sample``) still load from the real
    package directory; anything needing compiled ops raises
    ``ModuleNotFoundError`` on attribute access, which mmseg's guarded
    imports already handle.

    With full mmcv (a compiled ``mmcv._ext`` is importable, or already
    imported) nothing is touched: neither ``sys.modules`` nor the ``mmcv``
    module, so a broken full install fails with its own error.

    Returns:
        bool: True if the shim was installed, False if full mmcv is present.
    """
    if _full_mmcv_installed():
        return False
    if isinstance(sys.modules.get('mmcv.ops'), types.ModuleType) and \
            getattr(sys.modules['mmcv.ops'], '_mmseg_uda_shim', False):
        return True
    import mmcv
    ops = types.ModuleType('mmcv.ops')
    ops.__path__ = [osp.join(osp.dirname(mmcv.__file__), 'ops')]
    ops._mmseg_uda_shim = True
    sys.modules['mmcv.ops'] = ops
    mmcv.ops = ops
    from mmcv.ops.point_sample import bilinear_grid_sample, point_sample
    ops.point_sample = point_sample
    ops.bilinear_grid_sample = bilinear_grid_sample

    def sigmoid_focal_loss(*args, **kwargs):
        raise RuntimeError(
            'sigmoid_focal_loss needs compiled mmcv ops; install full mmcv '
            '(see README, "GPU cluster") or use FocalLoss(use_sigmoid=False).')

    ops.sigmoid_focal_loss = sigmoid_focal_loss

    def __getattr__(name):
        if name.startswith('__'):
            raise AttributeError(name)
        raise ModuleNotFoundError(
            f'mmcv.ops.{name} needs compiled mmcv (mmcv-lite is installed)')

    ops.__getattr__ = __getattr__
    return True


TRUST_CHECKPOINT_ENV = 'MMSEG_UDA_TRUST_CHECKPOINT'
TRUST_CHECKPOINT_CFG_KEY = 'trust_checkpoint'
_TRUST_HINT = (
    'If you trust this file, allow full unpickling with --trust-checkpoint '
    '(tools/train.py, tools/test.py), `trust_checkpoint = True` in the '
    f'config, or the environment variable {TRUST_CHECKPOINT_ENV}=1.')


class UntrustedCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds objects outside the allow-list of mmengine
    checkpoint types and was not marked trusted."""


def checkpoint_trusted() -> bool:
    """Whether full unpickling of local checkpoints was opted in to
    (``MMSEG_UDA_TRUST_CHECKPOINT`` is 1/true/yes)."""
    return os.environ.get(TRUST_CHECKPOINT_ENV, '').strip().lower() in (
        '1', 'true', 'yes')


def set_checkpoint_trust(trusted: bool) -> None:
    """Opt in to (or out of) full unpickling of local checkpoints for this
    process and the processes it starts (dataloader workers, launchers):
    sets ``MMSEG_UDA_TRUST_CHECKPOINT``. Called by tools/train.py and
    tools/test.py for ``--trust-checkpoint`` / cfg ``trust_checkpoint``."""
    os.environ[TRUST_CHECKPOINT_ENV] = '1' if trusted else '0'


def _history_buffer_getattr(obj, name):
    """The only ``getattr`` an mmengine checkpoint needs: a
    ``HistoryBuffer`` pickles its statistics table as
    ``getattr(HistoryBuffer, 'mean')`` etc. Anything else is refused."""
    from mmengine.logging import HistoryBuffer
    known = {'min', 'max', 'current', 'mean'} | set(
        HistoryBuffer._statistics_methods)
    if obj is HistoryBuffer and name in known:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'getattr({obj!r}, {name!r}) is not part of an mmengine checkpoint')


def mmengine_checkpoint_safe_globals() -> list:
    """The non-tensor types an mmengine Runner checkpoint pickles, found by
    scanning real checkpoints of this package's runs (single- and
    multi-optimizer, EMA teacher, schedulers, message hub) with
    ``torch.serialization.get_unsafe_globals_in_checkpoint``:
    ``HistoryBuffer``, numpy ``ndarray``/``dtype``/dtype classes,
    ``_reconstruct``, ``scalar`` (under the numpy 1.x ``numpy.core`` names
    too, for older files) and ``builtins.getattr`` (restricted to
    ``HistoryBuffer`` statistics methods)."""
    import numpy as np
    import torch
    from mmengine.logging import HistoryBuffer
    from packaging.version import parse
    try:
        multiarray = np._core.multiarray
    except AttributeError:  # numpy 1.x
        multiarray = np.core.multiarray
    allowed = [HistoryBuffer, np.ndarray, np.dtype, multiarray._reconstruct,
               multiarray.scalar]
    dtypes = getattr(np, 'dtypes', None)  # numpy>=1.25
    if dtypes is not None:
        allowed += [
            getattr(dtypes, name) for name in dir(dtypes)
            if isinstance(getattr(dtypes, name), type)
            and issubclass(getattr(dtypes, name), np.dtype)
        ]
    if parse(torch.__version__).release >= (2, 6):
        # (object, pickled name): alias and restricted-getattr entries
        for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
            allowed += [(multiarray._reconstruct, f'{module}._reconstruct'),
                        (multiarray.scalar, f'{module}.scalar')]
        allowed.append((_history_buffer_getattr, 'builtins.getattr'))
    else:  # torch 2.5: no named entries, allow getattr itself
        allowed.append(getattr)
    return allowed


def _unpickler_complaint(message: str) -> str:
    """The part of torch's weights-only error that names the offending
    global/call (its message is long and generic otherwise)."""
    found = re.search(r'GLOBAL (\S+)', message)
    if found:
        return f'the global {found.group(1)}'
    found = re.search(r'WeightsUnpickler error:\s*(.+)', message)
    if found:
        return found.group(1).strip()
    # torch's generic first paragraph, then the specific complaint
    parts = [p.strip() for p in message.split('\n\n') if p.strip()]
    return parts[1] if len(parts) > 1 else parts[0] if parts else message


def load_local_checkpoint(filename: str, map_location=None):
    """Load a local checkpoint safely (see module doc, fix 2).

    Raises:
        FileNotFoundError: no such file.
        UntrustedCheckpointError: the file needs types outside the
            allow-list and full unpickling was not opted in to.
    """
    import torch
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(
            f'Checkpoint file "{filename}" does not exist. Check the '
            'path given to --resume / load_from / pretrained.')
    if checkpoint_trusted():
        return torch.load(
            filename, map_location=map_location, weights_only=False)
    with torch.serialization.safe_globals(mmengine_checkpoint_safe_globals()):
        try:
            return torch.load(
                filename, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as err:
            what = _unpickler_complaint(str(err))
            raise UntrustedCheckpointError(
                f'Refused to unpickle checkpoint "{filename}": it needs '
                f'{what}, which is not among the types of an mmengine '
                'checkpoint; unpickling it could run code. '
                + _TRUST_HINT) from err


def patch_checkpoint_loading() -> None:
    """Route mmengine's local-file checkpoint loading (``--resume``,
    ``load_from``, ``pretrained=``/``init_cfg`` paths) through
    :func:`load_local_checkpoint` (see module doc, fix 2)."""
    from mmengine.runner.checkpoint import CheckpointLoader

    @CheckpointLoader.register_scheme(prefixes='', force=True)
    def load_from_local(filename, map_location):
        return load_local_checkpoint(filename, map_location)


def patch_cpu_distributed() -> None:
    """Start a gloo process group when the pytorch launcher runs without
    CUDA (see module doc)."""
    import torch
    import torch.distributed as torch_dist
    from mmengine.dist import utils as dist_utils

    original = dist_utils._init_dist_pytorch
    if getattr(original, '_mmseg_uda_patched', False):
        return

    def _init_dist_pytorch(backend, init_backend='torch', **kwargs):
        if torch.cuda.is_available():
            return original(backend, init_backend=init_backend, **kwargs)
        if backend != 'gloo':
            warnings.warn(f'No CUDA device: using the gloo backend instead '
                          f'of "{backend}" for CPU distributed training.')
        torch_dist.init_process_group(
            backend='gloo',
            rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']),
            **kwargs)

    _init_dist_pytorch._mmseg_uda_patched = True
    dist_utils._init_dist_pytorch = _init_dist_pytorch


def silence_expected_warnings() -> None:
    """Filter the two expected import-time warnings (see module doc)."""
    warnings.filterwarnings(
        'ignore', message='Fail to import ``MultiScaleDeformableAttention``',
        category=UserWarning)
    warnings.filterwarnings(
        'ignore', message='pkg_resources is deprecated as an API',
        category=UserWarning)


def apply_all() -> None:
    """Apply every fix once; called by ``import mmseg_uda``."""
    global _APPLIED
    if _APPLIED:
        return
    silence_expected_warnings()
    install_mmcv_ops_shim()
    patch_checkpoint_loading()
    patch_cpu_distributed()
    _APPLIED = True
