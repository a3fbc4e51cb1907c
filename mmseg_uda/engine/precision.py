"""Mixed precision and GPU backend switches.

- ``--amp`` (mmseg's meaning): every optimizer wrapper becomes mmengine's
  ``AmpOptimWrapper`` (float16 autocast + dynamic loss scaling, CUDA only).
- ``--amp-dtype bfloat16``, or in a config
  ``optim_wrapper = dict(type='AmpOptimWrapper', dtype='bfloat16', ...)``
  (for adversarial methods on each of ``segmentor`` / ``discriminator``):
  :class:`BF16AmpOptimWrapper`, bfloat16 autocast **without** a loss scaler
  (bfloat16 has float32's exponent range, so gradients do not underflow;
  a scaler would only cost time and could skip steps). Works on CUDA GPUs
  with bfloat16 support (Ampere and later) and, slowly, on CPU.
- ``env_cfg.allow_tf32`` (None: PyTorch's defaults; True/False: set
  ``torch.backends.cuda.matmul.allow_tf32`` and
  ``torch.backends.cudnn.allow_tf32``): TF32 tensor-core matmuls and
  convolutions for float32 training on Ampere+ GPUs (10-bit mantissa
  inputs, float32 accumulation). ``env_cfg.cudnn_benchmark`` is mmengine's.
- ``channels_last = True`` (top-level config key): parameters and
  convolution outputs in NHWC memory format, which cuDNN's tensor-core
  kernels use natively; it helps convnets (ResNet/DeepLab) under
  float16/bfloat16 and does not change results beyond rounding.

Numerically sensitive parts of the methods stay in float32 whatever the
autocast dtype (``mmseg_uda.models.utils.precision``).
"""
import copy
from contextlib import contextmanager
from typing import Optional

import torch
from mmengine.optim import OptimWrapper
from mmseg.registry import OPTIM_WRAPPERS
from torch import nn

AMP_DTYPES = ('float16', 'bfloat16')


@OPTIM_WRAPPERS.register_module()
class BF16AmpOptimWrapper(OptimWrapper):
    """Automatic mixed precision in bfloat16 without a loss scaler.

    The forward (``optim_context``) runs under
    ``torch.autocast(device_type, dtype=torch.bfloat16)`` on the device of
    the model's parameters; backward and step are ``OptimWrapper``'s
    (parameters, gradients and optimizer state stay float32).

    Args:
        dtype (str | torch.dtype): must be bfloat16 (kept so that configs
            written for ``AmpOptimWrapper(dtype='bfloat16')`` build as is).
        **kwargs: ``OptimWrapper`` arguments (optimizer, clip_grad,
            accumulative_counts).
    """

    def __init__(self, dtype='bfloat16', **kwargs):
        if dtype not in ('bfloat16', torch.bfloat16):
            raise ValueError(
                f'BF16AmpOptimWrapper is bfloat16 only, got dtype={dtype!r}; '
                "use type='AmpOptimWrapper' for float16.")
        kwargs.pop('loss_scale', None)
        super().__init__(**kwargs)
        self.cast_dtype = torch.bfloat16

    @staticmethod
    def _device_type(model: nn.Module) -> str:
        param = next(iter(model.parameters()), None)
        return param.device.type if param is not None else 'cpu'

    @contextmanager
    def optim_context(self, model: nn.Module):
        device_type = self._device_type(model)
        if device_type == 'cuda' and not torch.cuda.is_bf16_supported():
            raise RuntimeError(
                'This GPU has no bfloat16 support (needs compute capability '
                '8.0+, Ampere or later); use --amp (float16) instead.')
        with super().optim_context(model), torch.autocast(
                device_type=device_type, dtype=torch.bfloat16):
            yield

    def load_state_dict(self, state_dict: dict) -> None:
        # A checkpoint of a float16 run carries its GradScaler state.
        state_dict = dict(state_dict)
        state_dict.pop('loss_scaler', None)
        super().load_state_dict(state_dict)


def amp_optim_wrapper_cfg(cfg: dict) -> dict:
    """One optimizer-wrapper config with ``type='AmpOptimWrapper'`` and
    ``dtype='bfloat16'`` mapped to :class:`BF16AmpOptimWrapper` (no loss
    scaler); anything else is returned unchanged."""
    dtype = cfg.get('dtype')
    if cfg.get('type') == 'AmpOptimWrapper' and dtype in (
            'bfloat16', torch.bfloat16):
        cfg = copy.deepcopy(dict(cfg))
        cfg['type'] = 'BF16AmpOptimWrapper'
        cfg.pop('loss_scale', None)
    return cfg


def _wrapper_cfgs(optim_wrapper: dict):
    if 'optimizer' in optim_wrapper:
        return [optim_wrapper]
    return [v for v in optim_wrapper.values() if isinstance(v, dict)]


def set_amp_dtype(optim_wrapper: dict, dtype: str = 'float16') -> None:
    """Switch every optimizer wrapper of ``optim_wrapper`` (one wrapper, or
    the ``segmentor``/``discriminator`` entries) to mixed precision, in
    place: float16 -> mmengine's ``AmpOptimWrapper`` with dynamic loss
    scaling (mmseg's ``--amp``); bfloat16 -> :class:`BF16AmpOptimWrapper`.

    Raises:
        ValueError: unknown dtype, or a wrapper type other than
            OptimWrapper / AmpOptimWrapper / BF16AmpOptimWrapper.
    """
    if dtype not in AMP_DTYPES:
        raise ValueError(f'amp dtype must be one of {AMP_DTYPES}, got '
                         f'{dtype!r}')
    known = ('OptimWrapper', 'AmpOptimWrapper', 'BF16AmpOptimWrapper')
    for wrapper in _wrapper_cfgs(optim_wrapper):
        kind = wrapper.get('type', 'OptimWrapper')
        if kind not in known:
            raise ValueError(f'mixed precision works with {known}, got '
                             f'{kind}.')
        if dtype == 'float16':
            wrapper['type'] = 'AmpOptimWrapper'
            wrapper.setdefault('loss_scale', 'dynamic')
            wrapper.pop('dtype', None)
        else:
            wrapper['type'] = 'BF16AmpOptimWrapper'
            wrapper['dtype'] = 'bfloat16'
            wrapper.pop('loss_scale', None)


def apply_backend_flags(env_cfg: Optional[dict]) -> None:
    """Apply ``env_cfg.allow_tf32`` (None leaves PyTorch's defaults)."""
    allow_tf32 = (env_cfg or {}).get('allow_tf32')
    if allow_tf32 is None:
        return
    torch.backends.cuda.matmul.allow_tf32 = bool(allow_tf32)
    torch.backends.cudnn.allow_tf32 = bool(allow_tf32)


def to_channels_last(model: nn.Module) -> nn.Module:
    """4-D parameters and buffers (convolution weights) to channels_last;
    convolutions then produce channels_last outputs."""
    return model.to(memory_format=torch.channels_last)


def channels_last_runner(runner_cls):
    """A subclass of ``runner_cls`` (mmengine's Runner) that converts the
    model to channels_last after building it and before the DDP wrapper is
    built (so DDP's gradient buckets see the final parameter strides)."""

    class ChannelsLastRunner(runner_cls):

        def build_model(self, model):
            return to_channels_last(super().build_model(model))

    ChannelsLastRunner.__name__ = f'ChannelsLast{runner_cls.__name__}'
    return ChannelsLastRunner
