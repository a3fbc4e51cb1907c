"""Batch-level group statistics for group-wise alignment (CDGA), summed over
every process of a distributed run with gradients that match a single
process on the whole batch.

``group_class_distributions`` implements the group class histogram of the
reconstructed CDGA (docs/cdga.md):

    q_k = Σ_p A_k(p) Y(p) / (Σ_p A_k(p) + ε),

with the sums over all (valid) pixels of the global batch.
"""
from typing import Optional, Tuple

import torch
import torch.distributed as torch_dist
from mmengine.dist import get_world_size, is_distributed
from torch import Tensor


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose backward is again a sum over processes.

    Every process computes the same loss from the summed statistic, so the
    summed backward hands each process ``world_size`` times the gradient of
    its own contribution; DDP then averages over processes, which leaves the
    gradient of the global sum (the same as one process on the whole
    batch). Same semantics as ``torch.distributed.nn.functional.all_reduce``
    (deprecated in the pinned torch), kept here without the warning.
    """

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        torch_dist.all_reduce(out, op=torch_dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tensor:
        grad = grad_output.clone(memory_format=torch.contiguous_format)
        torch_dist.all_reduce(grad, op=torch_dist.ReduceOp.SUM)
        return grad


def all_reduce_sum(tensor: Tensor, differentiable: bool = True) -> Tensor:
    """Sum ``tensor`` over all processes (identity without a process group
    or with one process). ``differentiable=True`` keeps the autograd graph
    (see :class:`_AllReduceSum`); ``False`` returns a detached sum, for
    counts and logged values."""
    if not is_distributed() or get_world_size() == 1:
        return tensor if differentiable else tensor.detach()
    if differentiable and tensor.requires_grad:
        return _AllReduceSum.apply(tensor)
    out = tensor.detach().clone(memory_format=torch.contiguous_format)
    torch_dist.all_reduce(out, op=torch_dist.ReduceOp.SUM)
    return out


def stats_dtype(dtype: torch.dtype) -> torch.dtype:
    """Precision of batch statistics: the input's, but at least float32."""
    return torch.promote_types(dtype, torch.float32)


def one_hot_labels(
        label: Tensor,
        num_classes: int,
        ignore_index: int = 255,
        dtype: torch.dtype = torch.float32) -> Tuple[Tensor, Tensor]:
    """(B, H, W) integer labels -> (B, C, H, W) one-hot of ``dtype`` (all
    zeros at ignored pixels) and the (B, H, W) bool valid mask. Labels
    outside ``[0, num_classes)`` other than ``ignore_index`` are an
    error."""
    if label.dim() != 3:
        raise ValueError(
            f'Expected a (B, H, W) label map, got shape {tuple(label.shape)}')
    valid = label != ignore_index
    bad = valid & ((label < 0) | (label >= num_classes))
    if bad.any():
        raise ValueError(
            f'Label map has class ids {torch.unique(label[bad]).tolist()} '
            f'outside [0, {num_classes}) (ignore_index={ignore_index}).')
    safe = torch.where(valid, label, torch.zeros_like(label))
    onehot = torch.zeros(
        label.shape[0], num_classes, *label.shape[1:],
        dtype=dtype, device=label.device)
    onehot.scatter_(1, safe.unsqueeze(1), 1.0)
    onehot *= valid.unsqueeze(1)
    return onehot, valid


def group_class_distributions(
        assign: Tensor,
        class_prob: Tensor,
        valid: Optional[Tensor] = None,
        eps: float = 1e-6,
        reduce_distributed: bool = True) -> Tuple[Tensor, Tensor]:
    """Mass-normalised class histogram of every group (reconstructed
    CDGA, docs/cdga.md step 4):

        q_k = Σ_p A_k(p) Y(p) / (Σ_p A_k(p) + ε)

    Args:
        assign (Tensor): soft group assignment A, (B, K, H, W), each pixel on
            the simplex over the K groups.
        class_prob (Tensor): per-pixel class distribution Y, (B, L, H, W):
            one-hot source labels, or the softmax prediction P.
        valid (Tensor, optional): (B, H, W) bool; pixels outside it (ignore
            labels) count in neither sum.
        eps (float): added to the denominator, so an empty group gives q ≈ 0
            with finite gradients instead of NaN.
        reduce_distributed (bool): sum numerator and denominator over all
            processes (differentiably, see :func:`all_reduce_sum`).

    Returns:
        tuple: q (K, L) and the group masses Σ_p A_k(p) (K,), both global.
    """
    if assign.dim() != 4 or class_prob.dim() != 4:
        raise ValueError(
            'group_class_distributions expects (B, K, H, W) assignments and '
            f'(B, L, H, W) class maps, got {tuple(assign.shape)} and '
            f'{tuple(class_prob.shape)}')
    if assign.shape[0] != class_prob.shape[0] or \
            assign.shape[2:] != class_prob.shape[2:]:
        raise ValueError(
            'Group assignments and class maps must share batch and spatial '
            f'size, got {tuple(assign.shape)} and {tuple(class_prob.shape)}')
    if valid is not None:
        if valid.shape != (assign.shape[0], *assign.shape[2:]):
            raise ValueError(
                f'valid mask of shape {tuple(valid.shape)} does not match '
                f'the assignments {tuple(assign.shape)}')
        assign = assign * valid.unsqueeze(1).to(assign.dtype)
    num_groups = assign.shape[1]
    # at least float32: a half-precision sum over ~10^6 pixels overflows
    dtype = stats_dtype(assign.dtype)
    with torch.autocast(assign.device.type, enabled=False):
        assign, class_prob = assign.to(dtype), class_prob.to(dtype)
        numer = torch.einsum('bkhw,blhw->kl', assign, class_prob)
        mass = assign.sum(dim=(0, 2, 3))
    # one collective: [numerator | mass] per group
    stats = torch.cat([numer, mass.unsqueeze(1)], dim=1)
    if reduce_distributed:
        stats = all_reduce_sum(stats)
    numer, mass = stats[:, :-1], stats[:, -1]
    q = numer / (mass.view(num_groups, 1) + eps)
    return q, mass
