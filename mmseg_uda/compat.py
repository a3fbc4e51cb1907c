"""Compatibility fixes the pinned OpenMMLab stack needs (applied on import).

Each fix says why it exists and when it can be removed. Nothing here copies
code from mmseg/mmcv/mmengine; the fixes wrap or replace single functions.

1. ``install_mmcv_ops_shim``: mmcv-lite has no compiled ``mmcv._ext`` but
   ``mmcv/ops/__init__.py`` loads it eagerly, and mmseg imports ``mmcv.ops``
   unguarded (``mmseg/utils/mask_classification.py``, ``point_sample.py``,
   ``san_head.py``, ``focal_loss.py``), so ``import mmseg.models`` fails.
   Remove when mmseg guards those imports or full mmcv wheels exist for the
   torch in use.
2. ``patch_checkpoint_loading``: torch>=2.6 defaults ``torch.load`` to
   ``weights_only=True``; mmengine<=0.10.7 never passes ``weights_only`` and
   its checkpoints pickle ``HistoryBuffer``/numpy objects, so resume and
   ``load_from`` fail. Remove when mmengine passes ``weights_only=False``
   for its own checkpoints.
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
import os
import os.path as osp
import sys
import types
import warnings

_APPLIED = False


def install_mmcv_ops_shim() -> bool:
    """Make ``mmcv.ops`` importable under mmcv-lite.

    Pure-PyTorch submodules (``point_sample``) still load from the real
    package directory; anything needing compiled ops raises
    ``ModuleNotFoundError`` on attribute access, which mmseg's guarded
    imports already handle.

    Returns:
        bool: True if the shim was installed, False if full mmcv is present.
    """
    try:
        import mmcv._ext  # noqa: F401  full mmcv with compiled ops
        return False
    except ImportError:
        pass
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


def patch_checkpoint_loading() -> None:
    """Load local checkpoints with ``weights_only=False`` (see module doc).

    Only files the user points at (``--resume``, ``load_from``, a
    ``pretrained=`` path) are loaded this way, as mmengine did before
    torch 2.6.
    """
    import torch
    from mmengine.runner.checkpoint import CheckpointLoader

    @CheckpointLoader.register_scheme(prefixes='', force=True)
    def load_from_local(filename, map_location):
        filename = osp.expanduser(filename)
        if not osp.isfile(filename):
            raise FileNotFoundError(
                f'Checkpoint file "{filename}" does not exist. Check the '
                'path given to --resume / load_from / pretrained.')
        return torch.load(
            filename, map_location=map_location, weights_only=False)


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
