"""Float32 islands for mixed-precision training.

Under ``torch.autocast`` (``--amp``, ``--amp-dtype bfloat16``) matmuls and
convolutions run in float16/bfloat16. A few computations lose too much in
16 bits and are kept in float32 *by construction* with the helpers here:

- softmax / log-sum-exp over pixel-similarity matrices (PLCA's cycle
  association and spatial aggregation, T2S's InfoNCE): rows of thousands of
  near-equal logits, whose log-probabilities a bfloat16 mantissa (8 bits)
  rounds to a few distinct values;
- the Lovász sort (PLCA): the order of the errors decides the gradient;
- entropy / self-information maps (AdvEnt): P·log P of probabilities near 0;
- the EMA teacher update (θ_t ← a·θ_t + (1 − a)·θ_s with 1 − a = 1e-3 is
  below bfloat16's resolution relative to θ_t) and the T2S key queues.

PyTorch's CUDA autocast already computes ``softmax``/``log_softmax`` in
float32, but CPU autocast does not, and neither covers a hand-written
log-sum-exp, a sort or an in-place update. The helpers disable autocast and
cast 16-bit floating tensors to float32 (float32/float64 pass unchanged),
which is differentiable: gradients flow back to the 16-bit activations.
"""
import contextlib
import functools
from typing import Any, Callable, Iterator, TypeVar

import torch
from torch import Tensor

__all__ = ['autocast_disabled', 'to_float32', 'float32_island',
           'LOW_PRECISION_DTYPES']

LOW_PRECISION_DTYPES = (torch.float16, torch.bfloat16)
F = TypeVar('F', bound=Callable[..., Any])


def _autocast_device_types() -> tuple:
    types = ['cpu']
    if torch.cuda.is_available():
        types.append('cuda')
    return tuple(types)


@contextlib.contextmanager
def autocast_disabled() -> Iterator[None]:
    """Disable autocast on every device type in use (CPU and CUDA), so the
    ops inside run in the dtype of their inputs."""
    with contextlib.ExitStack() as stack:
        for device_type in _autocast_device_types():
            stack.enter_context(
                torch.autocast(device_type=device_type, enabled=False))
        yield


def to_float32(value: Any) -> Any:
    """float16/bfloat16 tensors -> float32 (differentiable); other tensors
    and non-tensors unchanged; recurses into lists, tuples and dicts."""
    if isinstance(value, Tensor):
        return value.float() if value.dtype in LOW_PRECISION_DTYPES \
            else value
    if isinstance(value, (list, tuple)) and not hasattr(value, '_fields'):
        return type(value)(to_float32(v) for v in value)
    if isinstance(value, dict):
        return type(value)((k, to_float32(v)) for k, v in value.items())
    return value


def float32_island(func: F) -> F:
    """Decorator: run ``func`` with autocast disabled and its 16-bit
    floating tensor arguments cast to float32, so everything it computes is
    float32 (float64 inputs stay float64) whatever the caller's autocast
    state. Outputs are returned as computed (float32)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with autocast_disabled():
            return func(*to_float32(args), **to_float32(kwargs))

    wrapper.__float32_island__ = True
    return wrapper  # type: ignore[return-value]
