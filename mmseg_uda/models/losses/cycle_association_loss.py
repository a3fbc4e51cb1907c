"""Pixel-level cycle association loss of PLCA (Kang et al., NeurIPS 2020),
with a memory-bounded (chunked) implementation.

Follows ``kgl-prml/Pixel-Level-Cycle-Association: solver/loss.py::
AssociationLoss`` (commit e01d77a0; see docs/plca.md). For one (source,
target) image pair
with N_s source and N_t target pixels at the feature resolution:

1. Target spatial aggregation (``spatial_agg``), target side only:
   f̃_j = (1 − α) f_j + α Σ_k W_jk f_k, W_jk = softmax_k(zn(cos(f_j, f_k)))
   for the feature level, W_jk = softmax_k(−KL(p_j ‖ p_k)) (no z-norm) for
   the classifier level. W is not detached.
2. Similarities S_ij = D(f^s_i, f̃^t_j) with D = cosine or −KL(p ‖ q); the
   t→s matrix is Sᵀ for cosine and −KL(p̃^t_j ‖ p^s_i) for KL
   (``build_correlation``).
3. P^{s→t} = softmax_j(zn(S)), P^{t→s} = softmax_i(zn(S^{ts})) where
   zn(S)_ab = (S_ab − μ_a) / (σ_a + 1e-10), μ/σ the row mean and unbiased
   std, **detached** (``scoring``).
4. Forward hop j*(i) = argmax_j P^{s→t}_ij, backward hop
   i*(i) = argmax_i' P^{t→s}_{j*(i) i'} (top-1, indices detached;
   ``cycle_associate``); a_i = P^{s→t}_{i j*} · P^{t→s}_{j* i*}.
5. Valid iff y_i ≠ ignore and y_{i*(i)} = y_i (``associate_gt``; ignore is
   checked on the start pixel only).
6. L = −mean_{i valid} log a_i with log clamped at −100 (``nn.BCELoss``
   against target 1 on the valid entries); 0 when no pixel is valid.
   log a_i is computed from log-softmax values rather than as the log of the
   product of two probabilities: equal wherever a_i does not underflow, and
   without BCELoss's float artefact of a zero gradient when a_i rounds to
   exactly 1. (The clamp never acts: a_i >= 1/(N_s·N_t) for top-1 hops.)

Two implementations with equal values and gradients (tests: 1e-5 in
float32):

- ``chunk_size=None``: the literal full-matrix computation (N×N similarity,
  z-norm and softmax matrices, batched over pairs as the official code), the
  reference.
- ``chunk_size=c``: memory-bounded (the official code can only down-sample
  or crop the feature map, ``TRAIN.USE_DOWNSAMPLING``/``USE_CROP``). Only
  row-wise quantities of the N×N matrices are needed: the argmax, the
  log-softmax value at the argmax and the softmax-weighted sum of the
  aggregation. Two autograd Functions compute them over row blocks of c rows
  and recompute each block in the backward pass (flash-attention style), so
  the extra memory is O(c·N + N·D) instead of O(N²). The cosine
  normalisation is folded into the blocks (S = a_i b_j ⟨x_i, y_j⟩ with the
  inverse norms a, b; their gradient is applied row by row), so no
  normalised copy of the 2048-channel features is made, and each input has
  one gradient buffer, filled in place; the row-constant entropy term of −KL is
  dropped, which is exact because every KL similarity enters a row softmax
  or a row z-normalisation, both invariant to row constants (values and
  gradients).
  For cosine the t→s similarity is Sᵀ: the forward's t→s pass (over the
  reached target pixels only) keeps each row's z-norm statistics and
  log-sum-exp (O(N)), and the backward of both hops is one pass over row
  blocks of S, each block serving the s→t rows and the t→s columns. Per
  pair that is 3 N_s·N_t·C products in the backward instead of
  3·(1 + |targets|/N_t); the forward stays 1 + |targets|/N_t, because
  the t→s softmax needs its column's z-norm statistics before the
  log-sum-exp, i.e. a second pass, which is kept to the reached targets.

The similarity path always runs in float32 (float64 inputs stay float64),
with autocast disabled.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.dist import all_reduce, get_world_size
from torch import Tensor, nn

from mmseg_uda.registry import MODELS

EPS = 1e-10  # ``scoring`` and ``compute_sim_mat_kl`` epsilon
METRICS = ('cos', 'kl')
LOG_CLAMP = -100.0  # nn.BCELoss clamps log(x) at -100


# --------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------
def _similarity_dtype(x: Tensor) -> Tensor:
    """float32 for half/bfloat16 inputs (AMP), float32/float64 unchanged."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def z_normalize(sim: Tensor, dim: int = -1) -> Tensor:
    """``AssociationLoss.scoring`` before its softmax: (S − μ) / (σ + 1e-10)
    along ``dim``, μ the mean and σ the unbiased std, both detached."""
    mean = sim.mean(dim, keepdim=True).detach()
    std = sim.std(dim, keepdim=True).detach()
    return (sim - mean) / (std + EPS)


def similarity_matrix(x: Tensor, y: Tensor, metric: str) -> Tensor:
    """Full similarity matrices (B, N, M) of x (B, N, D) and y (B, M, D):
    cosine (``compute_sim_mat``) or −KL(x_n ‖ y_m) with ε = 1e-10
    (``compute_sim_mat_kl``)."""
    if metric == 'cos':
        return F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).transpose(1, 2)
    neg_entropy = (x * torch.log(x + EPS)).sum(-1, keepdim=True)
    return x @ torch.log(y + EPS).transpose(1, 2) - neg_entropy


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f'alpha (spatial aggregation weight) must be in '
                         f'[0, 1), got {alpha}')


def _check_chunk_size(chunk_size: Optional[int]) -> None:
    if chunk_size is not None and (not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise ValueError('chunk_size must be a positive int (rows per '
                         f'block) or None (full matrices), got {chunk_size!r}')


def _check_probabilities(x: Tensor, name: str) -> None:
    """The KL metric compares class distributions along dim 1."""
    with torch.no_grad():
        sums = x.sum(1)
        if x.min() < 0 or (sums - 1).abs().max() > 1e-3:
            raise ValueError(
                f"metric='kl' expects class probabilities (softmax over dim "
                f'1) for {name}; got values in [{x.min().item():.3g}, '
                f'{x.max().item():.3g}] with channel sums in '
                f'[{sums.min().item():.3g}, {sums.max().item():.3g}]. Pass '
                'softmax(logits, dim=1).')


# --------------------------------------------------------------------------
# Memory-bounded computation
# --------------------------------------------------------------------------
def _add_at(buffer: Tensor, index, values: Tensor) -> None:
    """buffer[..., index] += values for a slice or an index tensor (indices
    may repeat)."""
    if isinstance(index, slice):
        buffer[..., index] += values
    else:
        buffer.index_add_(buffer.dim() - 1, index, values)


class _Side:
    """One image's pixels x (D, N) (columns are pixels) as queries and keys
    of a similarity, without materialising embedded copies of x:

    - cosine: S_ij = a_i b_j ⟨x_i, y_j⟩ with a, b the inverse norms
      1 / max(‖·‖, 1e-12) (``F.normalize``);
    - −KL up to a row constant: S_ij = ⟨p_i, log(q_j + ε)⟩ (the constant
      −⟨p_i, log(p_i + ε)⟩ cancels in every row softmax / z-norm).

    Gradient buffers are filled block by block; :meth:`finish_grads` adds
    the row-local terms of the normalisation / logarithm.
    """

    def __init__(self, x: Tensor, metric: str):
        self.x = x
        self.cos = metric == 'cos'
        if self.cos:
            norm = x.norm(dim=0)
            self.scale = 1.0 / norm.clamp_min(1e-12)
            self.scale_active = (norm > 1e-12).to(x.dtype)
            self.key = x
        else:
            self.scale = None
            self.key = torch.log(x + EPS)
        self.grad = self.grad_scale = self.grad_key = None

    def init_grads(self, grad: Tensor) -> None:
        """``grad``: zeroed buffer of x's shape (a view into the batch's
        gradient, so no per-image copy is made)."""
        self.grad = grad
        if self.cos:
            self.grad_scale = torch.zeros_like(self.scale)
        else:
            self.grad_key = torch.zeros_like(self.key)

    def finish_grads(self, chunk: int) -> Tensor:
        """dL/dx from the buffers (d a_i / d x_i = −a_i³ x_i; d log(x + ε) /
        dx = 1 / (x + ε)), applied in column blocks."""
        for start in range(0, self.x.shape[1], chunk):
            cols = slice(start, start + chunk)
            x = self.x[:, cols]
            if self.cos:
                coef = -self.grad_scale[cols] * self.scale[cols]**3 * \
                    self.scale_active[cols]
                self.grad[:, cols] += coef * x
            else:
                self.grad[:, cols] += self.grad_key[:, cols] / (x + EPS)
        return self.grad


def _block_scores(query: _Side, index, key: _Side, znorm: bool):
    """For the query pixels ``index`` (a block of rows): the query columns
    q, the raw products R = qᵀ key (cosine only, for the backward of the
    norms; None for KL), the scores Z (row-z-normalised S, or S) as a
    fresh tensor the caller may overwrite, and the z-norm divisor σ + ε
    (None without z-norm). The block's working set is one or two (rows, N)
    tensors: the scaling and z-norm are applied in place."""
    q = query.x[:, index]
    raw = q.t() @ key.key
    if query.cos:
        score = (raw * query.scale[index][:, None]).mul_(key.scale[None, :])
    else:
        score, raw = raw, None
    if not znorm:
        return q, raw, score, None
    mean = score.mean(1, keepdim=True)
    divisor = score.std(1, keepdim=True) + EPS
    return q, raw, score.sub_(mean).div_(divisor), divisor


def _softmax_(score: Tensor) -> Tensor:
    """Row softmax computed in place."""
    score.sub_(score.amax(1, keepdim=True)).exp_()
    return score.div_(score.sum(1, keepdim=True))


def _backprop_block(d_sim: Tensor, q: Tensor, raw: Optional[Tensor],
                    query: _Side, index, key: _Side) -> None:
    """Accumulate dL/dS of one block into the buffers of both sides
    (overwrites ``d_sim`` and ``raw``)."""
    if query.cos:
        q_scale = query.scale[index]
        d_sim_raw = raw.mul_(d_sim)  # raw is not needed afterwards
        _add_at(query.grad_scale, index, d_sim_raw @ key.scale)
        key.grad_scale += d_sim_raw.t() @ q_scale
        del d_sim_raw
        d_sim = d_sim.mul_(q_scale[:, None]).mul_(key.scale[None, :])
    _add_at(query.grad, index, key.key @ d_sim.t())
    # in place: q @ d_sim would allocate a (D, N) temporary per block
    (key.grad if key.cos else key.grad_key).addmm_(q, d_sim)


def _row_blocks(rows, chunk: int):
    """Blocks of query rows: slices of range(rows) for an int, index-tensor
    pieces for a tensor."""
    if isinstance(rows, int):
        for start in range(0, rows, chunk):
            yield slice(start, min(start + chunk, rows)), start
    else:
        for start in range(0, rows.numel(), chunk):
            yield rows[start:start + chunk], start


class _ChunkedSelfAggregation(torch.autograd.Function):
    """x̃_i = (1 − α) x_i + α Σ_j softmax_j(Z)_ij x_j within each image of
    x (B, D, N), Z the z-normalised cosine similarities or −KL (see
    :class:`_Side`), over row blocks. The backward recomputes each block;
    nothing N×N is kept."""

    @staticmethod
    def forward(ctx, x, metric, alpha, chunk):
        znorm = metric == 'cos'
        out = torch.empty_like(x)
        for x_n, out_n in zip(x, out):
            side = _Side(x_n, metric)
            for index, _ in _row_blocks(x_n.shape[1], chunk):
                _, _, score, _ = _block_scores(side, index, side, znorm)
                weights = _softmax_(score)
                out_n[:, index] = (1 - alpha) * x_n[:, index] + \
                    alpha * (x_n @ weights.t())
        ctx.save_for_backward(x)
        ctx.metric, ctx.alpha, ctx.chunk = metric, alpha, chunk
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, = ctx.saved_tensors
        alpha, chunk = ctx.alpha, ctx.chunk
        grad = torch.zeros_like(x)
        for x_n, grad_n, g_n in zip(x, grad, grad_out):
            side = _Side(x_n, ctx.metric)
            side.init_grads(grad_n)
            znorm = side.cos
            grad_n.add_(g_n, alpha=1 - alpha)
            for index, _ in _row_blocks(x_n.shape[1], chunk):
                q, raw, score, divisor = _block_scores(
                    side, index, side, znorm)
                weights = _softmax_(score)
                g_rows = g_n[:, index] * alpha
                grad_n.addmm_(g_rows, weights)  # through the values x_j
                d_weights = g_rows.t() @ x_n
                # row-wise <d_weights, weights> without a (rows, N) temporary
                delta = torch.bmm(d_weights[:, None, :],
                                  weights[:, :, None])[:, 0]
                d_sim = weights.mul_(d_weights.sub_(delta))  # softmax bwd
                del d_weights
                if znorm:
                    d_sim = d_sim.div_(divisor)  # μ and σ are detached
                _backprop_block(d_sim, q, raw, side, index, side)
            side.finish_grads(chunk)
        return grad, None, None, None


def _row_max_log_softmax(query: _Side, rows: Tensor, key: _Side,
                         chunk: int, stats: bool = False):
    """argmax_j Z_rj and log softmax(Z)_{r, argmax} for the rows r of the
    z-normalised similarity of query pixels ``rows`` to all key pixels.
    With ``stats``, also each row's mean μ_r, z-norm divisor σ_r + ε and
    max_j Z_rj, from which :func:`_fused_cosine_backward` rebuilds
    softmax(Z)_r entrywise: exp(Z_rj − max_j Z_rj + log P_r,argmax)."""
    values = query.x.new_empty(rows.numel())
    argmax = torch.empty_like(rows)
    if stats:
        means, divisors, maxima = (query.x.new_empty(rows.numel())
                                   for _ in range(3))
    for index, start in _row_blocks(rows, chunk):
        q = query.x[:, index]
        score = q.t() @ key.key
        if query.cos:
            score.mul_(query.scale[index][:, None]).mul_(key.scale[None, :])
        mean = score.mean(1, keepdim=True)
        divisor = score.std(1, keepdim=True) + EPS
        score.sub_(mean).div_(divisor)
        best_score, best = score.max(1, keepdim=True)
        block = slice(start, start + len(index))
        # log softmax at the maximum: −log Σ_j exp(Z_j − Z_max)
        values[block] = -torch.log(score.sub_(best_score).exp_().sum(1))
        argmax[block] = best[:, 0]
        if stats:
            means[block], divisors[block] = mean[:, 0], divisor[:, 0]
            maxima[block] = best_score[:, 0]
    if stats:
        return values, argmax, (means, divisors, maxima)
    return values, argmax


def _row_max_log_softmax_backward(query: _Side, rows: Tensor, key: _Side,
                                  argmax: Tensor, grad: Tensor,
                                  chunk: int) -> None:
    for index, start in _row_blocks(rows, chunk):
        q, raw, score, divisor = _block_scores(query, index, key, True)
        g = grad[start:start + len(index)]
        # d log softmax(Z)_{r j*} / dZ_rj = 1[j = j*] − softmax(Z)_rj
        d_sim = _softmax_(score).mul_(-g[:, None])
        d_sim.scatter_add_(1, argmax[start:start + len(index), None],
                           g[:, None])
        _backprop_block(d_sim.div_(divisor), q, raw, query, index, key)


def _pair_slices(counts: Sequence[int]):
    offset = 0
    for count in counts:
        yield slice(offset, offset + count)
        offset += count


def _fused_cosine_backward(src: _Side, start: Tensor, mid: Tensor,
                           g_fwd: Optional[Tensor], tgt: _Side,
                           targets: Tensor, target_stats, end_of_target,
                           g_targets: Optional[Tensor], chunk: int) -> None:
    """Backward of both hops of one cosine pair in one pass over blocks of
    source rows of S (N_s × N_t).

    The t→s similarity is Sᵀ, so row j of the t→s hop is column j of S:
    with its saved μ_j, σ_j + ε, max_j and log P_j (the forward's t→s
    pass over the targets), softmax(Zᵀ)_ji = exp((S_ij − μ_j)/(σ_j + ε)
    − max_j + log P_j) is rebuilt from the same block of S as the forward
    hop's row softmax. dL/dS of both hops is summed per block and
    backpropagated once: 3 N_s·N_t·C products instead of 3 + 3·|targets|/N_t
    (each block of S recomputed once, the two gradient products once).
    """
    means, divisors, maxima, log_p = target_stats
    num_src = src.x.shape[1]
    g_rows = mid_rows = None
    if g_fwd is not None:
        # dense over all source pixels: the t→s softmax spans all of them,
        # the forward hop only the start pixels (0 gradient elsewhere)
        g_rows = g_fwd.new_zeros(num_src).index_put_((start, ), g_fwd)
        mid_rows = start.new_zeros(num_src).index_put_((start, ), mid)
    if g_targets is not None:
        col_shift = (maxima - log_p)[None, :]
    for index, _ in _row_blocks(num_src, chunk):
        q = src.x[:, index]
        raw = q.t() @ tgt.key
        sim = (raw * src.scale[index][:, None]).mul_(tgt.scale[None, :])
        d_cols = None
        if g_targets is not None:
            # d log softmax(Zᵀ)_{j i*} / dZᵀ_ji = 1[i = i*] − softmax(Zᵀ)_ji
            d_cols = sim[:, targets].sub_(means[None, :]).div_(
                divisors[None, :]).sub_(col_shift).exp_().mul_(
                    -g_targets[None, :])
            hit = (end_of_target >= index.start) & (end_of_target <
                                                    index.stop)
            cols = torch.nonzero(hit)[:, 0]
            d_cols.index_put_((end_of_target[cols] - index.start, cols),
                              g_targets[cols], accumulate=True)
            d_cols.div_(divisors[None, :])
        if g_rows is not None:
            g = g_rows[index]
            mean = sim.mean(1, keepdim=True)
            divisor = sim.std(1, keepdim=True) + EPS
            d_sim = _softmax_(sim.sub_(mean).div_(divisor)).mul_(-g[:, None])
            d_sim.scatter_add_(1, mid_rows[index, None], g[:, None])
            d_sim.div_(divisor)
            if d_cols is not None:
                d_sim.index_add_(1, targets, d_cols)
        else:
            d_sim = sim.zero_()
            d_sim[:, targets] = d_cols
        del d_cols
        _backprop_block(d_sim, q, raw, src, index, tgt)


class _ChunkedCycleAssociation(torch.autograd.Function):
    """Both hops for pairs (x_s[n], x_t[n]) of pixel columns (B, D, N):
    for the start pixels ``start`` (flat, grouped by pair, ``counts[n]``
    of pair n) returns log P^{s→t}_{i j*}, log P^{t→s}_{j* i*}, j*, i*.
    The backward hop is computed only from the targets reached; the
    backward pass recomputes each block and accumulates into one gradient
    buffer per input. For cosine (t→s similarity = Sᵀ) the backward of both
    hops is one pass over S (:func:`_fused_cosine_backward`)."""

    @staticmethod
    def forward(ctx, x_s, x_t, start, counts, metric, chunk):
        log_p_fwd = x_s.new_empty(start.numel())
        log_p_bwd = x_s.new_empty(start.numel())
        mid, end = torch.empty_like(start), torch.empty_like(start)
        saved = []
        for n, rows in enumerate(_pair_slices(counts)):
            src, tgt = _Side(x_s[n], metric), _Side(x_t[n], metric)
            log_p_fwd[rows], mid[rows] = _row_max_log_softmax(
                src, start[rows], tgt, chunk)
            targets, inverse = torch.unique(mid[rows], return_inverse=True)
            log_p, end_of_target, *stats = _row_max_log_softmax(
                tgt, targets, src, chunk, stats=metric == 'cos')
            log_p_bwd[rows], end[rows] = log_p[inverse], \
                end_of_target[inverse]
            saved += [targets, inverse, end_of_target]
            # cosine: the t→s rows' statistics and log P, for the fused
            # backward (O(N) each)
            saved += [*stats[0], log_p] if stats else [None] * 4
        ctx.save_for_backward(x_s, x_t, start, mid, *saved)
        ctx.counts, ctx.metric, ctx.chunk = counts, metric, chunk
        ctx.mark_non_differentiable(mid, end)
        return log_p_fwd, log_p_bwd, mid, end

    @staticmethod
    def backward(ctx, g_fwd, g_bwd, _g_mid, _g_end):
        x_s, x_t, start, mid, *saved = ctx.saved_tensors
        chunk = ctx.chunk
        grad_s, grad_t = torch.zeros_like(x_s), torch.zeros_like(x_t)
        for n, rows in enumerate(_pair_slices(ctx.counts)):
            targets, inverse, end_of_target, *target_stats = \
                saved[7 * n:7 * n + 7]
            src, tgt = _Side(x_s[n], ctx.metric), _Side(x_t[n], ctx.metric)
            src.init_grads(grad_s[n])
            tgt.init_grads(grad_t[n])
            g_targets = None
            if g_bwd is not None:
                g_targets = g_bwd.new_zeros(targets.numel()).index_add_(
                    0, inverse, g_bwd[rows])
            if ctx.metric == 'cos' and (g_fwd is not None
                                        or g_targets is not None):
                _fused_cosine_backward(
                    src, start[rows], mid[rows],
                    None if g_fwd is None else g_fwd[rows], tgt, targets,
                    target_stats, end_of_target, g_targets, chunk)
            else:
                if g_fwd is not None:
                    _row_max_log_softmax_backward(src, start[rows], tgt,
                                                  mid[rows], g_fwd[rows],
                                                  chunk)
                if g_targets is not None:
                    _row_max_log_softmax_backward(tgt, targets, src,
                                                  end_of_target, g_targets,
                                                  chunk)
            src.finish_grads(chunk)
            tgt.finish_grads(chunk)
        return grad_s, grad_t, None, None, None, None


# --------------------------------------------------------------------------
# Spatial aggregation (training target side, and PLCA's test-time inference)
# --------------------------------------------------------------------------
def _check_feature_map(x: Tensor, name: str) -> None:
    if x.dim() != 4:
        raise ValueError(f'{name} must be a (B, C, H, W) feature map, got '
                         f'shape {tuple(x.shape)}')
    if x.shape[2] * x.shape[3] < 2:
        raise ValueError(
            f'{name} has {x.shape[2] * x.shape[3]} pixel(s); the row '
            'z-normalisation (unbiased std) needs at least 2')


def _full_aggregation(x: Tensor, metric: str, alpha: float) -> Tensor:
    """Full-matrix aggregation of a batch of pixel rows x (B, N, D)."""
    sim = similarity_matrix(x, x, metric)
    weights = torch.softmax(z_normalize(sim) if metric == 'cos' else sim, -1)
    return (1 - alpha) * x + alpha * (weights @ x)


def spatial_aggregation(x: Tensor,
                        metric: str = 'cos',
                        alpha: float = 0.5,
                        chunk_size: Optional[int] = 1024) -> Tensor:
    """PLCA's spatial aggregation within each image
    (``AssociationLoss.spatial_agg`` mixed with the input as in
    ``AssociationLoss.forward`` and ``tools/test.py``):
    x̃_j = (1 − α) x_j + α Σ_k W_jk x_k, W_jk = softmax_k(zn(cos(x_j, x_k)))
    for ``metric='cos'`` and softmax_k(−KL(x_j ‖ x_k)) for ``'kl'``
    (probabilities along dim 1, no z-normalisation).

    Args:
        x (Tensor): (B, C, H, W).
        metric (str): 'cos' (features) or 'kl' (class probabilities).
        alpha (float): mixing weight α in [0, 1); PLCA uses 0.5.
        chunk_size (int | None): rows per block of the memory-bounded
            computation; None builds the full (H·W)² matrices.

    Returns:
        Tensor: (B, C, H, W) in float32 (float64 for float64 input).
    """
    _check_metric(metric)
    _check_alpha(alpha)
    _check_chunk_size(chunk_size)
    _check_feature_map(x, 'x')
    if metric == 'kl':
        _check_probabilities(x, 'x')
    if alpha == 0:
        return x
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = _similarity_dtype(x)
        if chunk_size is None:
            rows = _full_aggregation(x.flatten(2).transpose(1, 2), metric,
                                     alpha)
            return rows.transpose(1, 2).reshape(x.shape)
        return _ChunkedSelfAggregation.apply(x.flatten(2), metric, alpha,
                                             chunk_size).reshape(x.shape)


# --------------------------------------------------------------------------
# Cycle association
# --------------------------------------------------------------------------
@dataclass
class CycleAssociation:
    """The cycle associations of a batch of (source, target) pairs.

    Entries are the start (source) pixels of all pairs, concatenated; pixel
    indices are flat within the pair's H·W grid.

    Attributes:
        pair (Tensor): pair index of each start pixel.
        start (Tensor): start source pixel i.
        mid (Tensor): associated target pixel j*(i).
        end (Tensor): source pixel i*(i) associated back from j*(i).
        log_p_forward (Tensor): log P^{s→t}_{i j*} (differentiable).
        log_p_backward (Tensor): log P^{t→s}_{j* i*} (differentiable).
        valid (Tensor): bool, cycle-consistent (y_end == y_start).
    """
    pair: Tensor
    start: Tensor
    mid: Tensor
    end: Tensor
    log_p_forward: Tensor
    log_p_backward: Tensor
    valid: Tensor

    @property
    def log_score(self) -> Tensor:
        """log a_i = log P^{s→t}_{i j*} + log P^{t→s}_{j* i*}."""
        return self.log_p_forward + self.log_p_backward

    @property
    def num_start(self) -> int:
        return int(self.start.numel())


def _full_associate(feat_s: Tensor, feat_t: Tensor, metric: str,
                    alpha: float) -> Tuple[Tensor, ...]:
    """Full-matrix association of all source pixels of a batch (B, N, D):
    (log P^{s→t}_{ij*}, log P^{t→s}_{j*i*}, j*, i*), each (B, Ns)."""
    if alpha > 0:
        feat_t = _full_aggregation(feat_t, metric, alpha)
    sim_st = similarity_matrix(feat_s, feat_t, metric)
    sim_ts = sim_st.transpose(1, 2) if metric == 'cos' \
        else similarity_matrix(feat_t, feat_s, metric)
    score_st, score_ts = z_normalize(sim_st), z_normalize(sim_ts)
    mid = score_st.argmax(-1)
    end_of_target = score_ts.argmax(-1)
    log_p_st = torch.log_softmax(score_st, -1).gather(-1, mid[..., None])
    log_p_ts = torch.log_softmax(score_ts, -1).gather(
        -1, end_of_target[..., None])[..., 0]
    return (log_p_st[..., 0], log_p_ts.gather(1, mid), mid,
            end_of_target.gather(1, mid))


def _chunked_associate(feat_s: Tensor, feat_t: Tensor, start: Tensor,
                       counts: List[int], metric: str, alpha: float,
                       chunk: int) -> Tuple[Tensor, ...]:
    """Memory-bounded association of pairs of pixel columns (B, D, N) from
    the start pixels ``start`` (grouped by pair, ``counts[n]`` of pair n):
    (log P^{s→t}_{ij*}, log P^{t→s}_{j*i*}, j*, i*), each (len(start), )."""
    if alpha > 0:
        feat_t = _ChunkedSelfAggregation.apply(feat_t, metric, alpha, chunk)
    return _ChunkedCycleAssociation.apply(feat_s, feat_t, start, counts,
                                          metric, chunk)


def cycle_associate(feat_s: Tensor,
                    feat_t: Tensor,
                    label_s: Tensor,
                    metric: str = 'cos',
                    alpha: float = 0.5,
                    chunk_size: Optional[int] = 1024,
                    max_pixels: Optional[int] = None,
                    ignore_index: int = 255) -> CycleAssociation:
    """PLCA's cycle association of each source image n with target image n.

    Args:
        feat_s (Tensor): source features (B, C, h, w); class probabilities
            for ``metric='kl'``.
        feat_t (Tensor): target features (B, C, h', w').
        label_s (Tensor): source labels (B, H, W); nearest-downsampled to
            (h, w) when the size differs (as PLCA's solver does).
        metric, alpha, chunk_size: see :class:`CycleAssociationLoss`.
        max_pixels (int | None): start from at most this many labelled
            source pixels per pair (uniform random subset).
        ignore_index (int): unlabelled source pixels never start a cycle.

    Returns:
        CycleAssociation: one entry per start pixel.
    """
    _check_metric(metric)
    _check_alpha(alpha)
    _check_chunk_size(chunk_size)
    _check_feature_map(feat_s, 'feat_s')
    _check_feature_map(feat_t, 'feat_t')
    if feat_s.shape[:2] != feat_t.shape[:2]:
        raise ValueError(
            'feat_s and feat_t must have the same batch size (source n is '
            'paired with target n) and channels; got '
            f'{tuple(feat_s.shape)} and {tuple(feat_t.shape)}')
    if label_s.dim() != 3 or label_s.shape[0] != feat_s.shape[0]:
        raise ValueError(f'label_s must be (B, H, W) with B = '
                         f'{feat_s.shape[0]}, got {tuple(label_s.shape)}')
    if label_s.is_floating_point():
        raise TypeError('label_s must hold integer class ids, got '
                        f'{label_s.dtype}')
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f'max_pixels must be positive or None, got '
                         f'{max_pixels}')
    if metric == 'kl':
        _check_probabilities(feat_s, 'feat_s')
        _check_probabilities(feat_t, 'feat_t')
    b, _, h, w = feat_s.shape
    if label_s.shape[1:] != (h, w):
        label_s = F.interpolate(
            label_s[:, None].float(), size=(h, w), mode='nearest')[:, 0]
    label = label_s.long().flatten(1)
    starts = []
    for n in range(b):
        start = torch.nonzero(label[n] != ignore_index)[:, 0]
        if max_pixels is not None and start.numel() > max_pixels:
            keep = torch.randperm(start.numel(), device=start.device)
            start = start[keep[:max_pixels]].sort().values
        starts.append(start)

    with torch.autocast(device_type=feat_s.device.type, enabled=False):
        pixels_s = _similarity_dtype(feat_s).flatten(2)  # (B, C, N)
        pixels_t = _similarity_dtype(feat_t).flatten(2)
        pair = torch.cat([torch.full_like(s, n) for n, s in enumerate(starts)])
        start = torch.cat(starts)
        if chunk_size is None:
            full = _full_associate(
                pixels_s.transpose(1, 2), pixels_t.transpose(1, 2), metric,
                alpha)
            log_p_fwd, log_p_bwd, mid, end = (x[pair, start] for x in full)
        else:
            log_p_fwd, log_p_bwd, mid, end = _chunked_associate(
                pixels_s, pixels_t, start, [s.numel() for s in starts],
                metric, alpha, chunk_size)
    return CycleAssociation(
        pair=pair,
        start=start,
        mid=mid,
        end=end,
        log_p_forward=log_p_fwd,
        log_p_backward=log_p_bwd,
        valid=label[pair, end] == label[pair, start])


@MODELS.register_module()
class CycleAssociationLoss(nn.Module):
    """PLCA's pixel-level cycle association loss for one level
    (``solver/loss.py::AssociationLoss.forward``; Kang et al., NeurIPS 2020).

    ``loss = −(1/|V|) Σ_{i∈V} max(log a_i, −100)`` over the cycle-consistent
    source pixels V of all pairs (0 if V is empty), times ``loss_weight``.
    A pure function of (source features, target features, source labels):
    target labels are never an input.

    Args:
        metric (str): 'cos' for the feature level (layer4 features), 'kl'
            for the classifier level (inputs are softmax probabilities).
        alpha (float): spatial aggregation weight α of the target side
            (``TRAIN.SPAGG_ALPHA`` = 0.5); 0 disables aggregation.
        chunk_size (int | None): rows per block of the memory-bounded
            computation (peak extra memory O(chunk_size·N + N·C)); None
            computes the full N×N matrices (reference).
        max_pixels (int | None): random subset of at most this many
            labelled source pixels start a cycle per pair (memory/compute
            knob, off by default; the softmax denominators still run over
            all pixels).
        ignore_index (int): source label of unlabelled pixels.
        reduction (str): 'mean' averages over the valid pixels of this call
            (the official per-GPU mean); 'global_mean' over the valid pixels
            of all processes (local sum · world_size / all-reduced count, so
            DDP's gradient average equals one process on the whole batch).
        loss_weight (float): multiplier of the loss.
        loss_name (str): key of the loss in a losses dict.
    """

    def __init__(self,
                 metric: str = 'cos',
                 alpha: float = 0.5,
                 chunk_size: Optional[int] = 1024,
                 max_pixels: Optional[int] = None,
                 ignore_index: int = 255,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 loss_name: str = 'loss_ass'):
        super().__init__()
        _check_metric(metric)
        _check_alpha(alpha)
        _check_chunk_size(chunk_size)
        if reduction not in ('mean', 'global_mean'):
            raise ValueError("reduction must be 'mean' or 'global_mean', got "
                             f'{reduction!r}')
        if max_pixels is not None and max_pixels < 1:
            raise ValueError(f'max_pixels must be positive or None, got '
                             f'{max_pixels}')
        self.metric = metric
        self.alpha = alpha
        self.chunk_size = chunk_size
        self.max_pixels = max_pixels
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def associate(self, feat_s: Tensor, feat_t: Tensor,
                  label_s: Tensor) -> CycleAssociation:
        """The cycle associations (see :func:`cycle_associate`)."""
        return cycle_associate(feat_s, feat_t, label_s, self.metric,
                               self.alpha, self.chunk_size, self.max_pixels,
                               self.ignore_index)

    def loss_and_stats(self, feat_s: Tensor, feat_t: Tensor,
                       label_s: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        """The weighted loss and ``valid_ratio``: the fraction of labelled
        start pixels whose cycle is consistent (over all processes for
        ``reduction='global_mean'``)."""
        assoc = self.associate(feat_s, feat_t, label_s)
        per_pixel = -assoc.log_score.clamp(min=LOG_CLAMP)
        total = per_pixel[assoc.valid].sum()
        counts = torch.stack([
            assoc.valid.sum(),
            torch.tensor(assoc.num_start, device=assoc.valid.device)
        ]).to(per_pixel.dtype)
        scale = 1.0
        if self.reduction == 'global_mean':
            all_reduce(counts)
            scale = float(get_world_size())
        num_valid, num_start = counts.tolist()
        if num_valid > 0:
            loss = total * (scale / num_valid)
        else:
            # No valid cycle: zero loss that still spans the graph.
            loss = per_pixel.sum() * 0.0
        ratio = counts[0] / counts[1].clamp_min(1)
        return self.loss_weight * loss, dict(valid_ratio=ratio.detach())

    def forward(self, feat_s: Tensor, feat_t: Tensor,
                label_s: Tensor) -> Tensor:
        return self.loss_and_stats(feat_s, feat_t, label_s)[0]
