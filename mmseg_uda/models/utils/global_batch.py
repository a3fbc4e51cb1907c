"""The numbering of the global batch under data-parallel training.

This module is the one definition of that numbering for the whole package;
every method that draws per sample, pairs samples across processes or
indexes a gathered tensor goes through it, so that W processes compute what
one process computes on the whole global batch.

**Numbering.** mmengine's samplers and :class:`UDAPairSampler` hand rank r
of W the elements r, r + W, r + 2W, ... of one global sample stream, and the
DataLoader (``batch_size`` B on every rank) cuts each rank's share into
batches. In iteration k, local sample i of rank r is therefore stream element
k·B·W + i·W + r, and its **global index** within the iteration's batch is::

    g = i · W + r        (rank r = g mod W, local index i = g div W)

A 1-process run with ``batch_size`` B·W on the same stream (W = 1) holds the
same samples at the same positions g. The global batch is thus the per-rank
batches *interleaved*, not concatenated in rank order: with W = 2, B = 2,
rank 0 holds global samples 0 and 2, rank 1 holds 1 and 3.

**Equal local batch sizes.** The numbering covers 0 … B·W − 1 exactly once
only if every rank holds the same number of samples B. An infinite sampler
(``UDAPairSampler``, ``InfiniteSampler``) with a fixed ``batch_size`` always
gives that, and so does ``DefaultSampler`` (it pads every rank to the same
length) unless ``drop_last=False`` leaves a short last batch of unequal
size. The helpers that need the numbering check it with one all-gather of
the local sizes and raise :class:`ValueError` naming the sizes otherwise.

The helpers are no-ops (identity) when not distributed.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from mmengine.dist import all_gather, get_rank, get_world_size
from torch import Tensor

__all__ = [
    'global_batch_size', 'global_indices', 'gather_global',
    'interleave_ranks', 'local_part', 'rank_and_local_index'
]


def _check_equal(sizes: Sequence[int], what: str) -> int:
    if len(set(sizes)) > 1:
        raise ValueError(
            f'Global batch numbering (g = i * world_size + rank, see '
            f'mmseg_uda/models/utils/global_batch.py) needs the same local '
            f'{what} on every process, got {list(sizes)} on ranks '
            f'0..{len(sizes) - 1}. Use UDAPairSampler (or an infinite '
            f'sampler) with a fixed train_dataloader.batch_size, or '
            f'drop_last=True with a finite sampler.')
    return int(sizes[0])


def _local_sizes(local_size: int) -> List[int]:
    """The local batch sizes of all ranks (one all-gather)."""
    sizes = all_gather(torch.tensor([int(local_size)], dtype=torch.long))
    return [int(s) for s in torch.cat(sizes).tolist()]


def global_batch_size(local_size: int, what: str = 'batch size') -> int:
    """B·W for a local batch of B samples, after checking that every rank
    holds B (a collective: call it on every rank)."""
    world = get_world_size()
    if world == 1:
        return int(local_size)
    return _check_equal(_local_sizes(local_size), what) * world


def global_indices(local_size: int,
                   device: Optional[torch.device] = None) -> Tensor:
    """Global indices ``i·W + r`` (B,) of this rank's local samples
    i = 0 … B − 1, after checking equal local sizes (a collective)."""
    global_batch_size(local_size)
    rank, world = get_rank(), get_world_size()
    return torch.arange(int(local_size), device=device) * world + rank


def rank_and_local_index(index: Tensor,
                         local_size: int) -> Tuple[Tensor, Tensor]:
    """(rank, local index) holding the global indices ``index`` of a global
    batch of ``local_size`` samples per rank: (g mod W, g div W)."""
    world = get_world_size()
    if index.numel() and int(index.max()) >= local_size * world:
        raise IndexError(
            f'global index {int(index.max())} outside a global batch of '
            f'{local_size} x {world} samples')
    return index % world, torch.div(index, world, rounding_mode='floor')


def interleave_ranks(parts: Sequence[Tensor]) -> Tensor:
    """Per-rank tensors (B, ...) in rank order -> the globally ordered
    (B·W, ...) tensor whose row i·W + r is row i of ``parts[r]``."""
    _check_equal([int(p.shape[0]) for p in parts], 'number of rows')
    if len(parts) == 1:
        return parts[0]
    stacked = torch.stack(list(parts), dim=1)  # (B, W, ...)
    return stacked.reshape((-1, ) + tuple(stacked.shape[2:]))


def gather_global(x: Tensor) -> Tensor:
    """All-gather per-sample rows ``x`` (B, ...) of every rank into the
    global batch order (B·W, ...) (not differentiable; a collective).
    Raises if the ranks hold different numbers of rows."""
    if get_world_size() == 1:
        return x
    _check_equal(_local_sizes(x.shape[0]), 'number of rows')
    return interleave_ranks(all_gather(x.contiguous()))


def local_part(x: Tensor) -> Tensor:
    """This rank's rows (B, ...) of a globally ordered tensor (B·W, ...):
    rows r, r + W, ... (the inverse of :func:`gather_global`)."""
    world = get_world_size()
    if x.shape[0] % world:
        raise ValueError(
            f'A globally ordered tensor of {x.shape[0]} rows cannot be split '
            f'over {world} processes (g = i * world_size + rank).')
    return x[get_rank()::world]
