"""Category-wise InfoNCE of T2S-DA with the source prototype as positive
(reconstructed: no official T2S-DA code is public; see docs/t2s.md)."""
from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mmseg_uda.registry import MODELS


class T2SLossOutput(NamedTuple):
    """What :class:`T2SContrastiveLoss` returns.

    Attributes:
        loss: the weighted loss (scalar, with gradient to the queries).
        per_class_loss: (C,) ℓ_c (detached); 0 for classes without queries.
        class_mask: (C,) bool, classes counted in the loss.
        pos_sim: (Q,) cosine similarity of each query to its prototype.
        neg_sim: (Q,) mean cosine similarity to its negatives.
    """
    loss: Tensor
    per_class_loss: Tensor
    class_mask: Tensor
    pos_sim: Tensor
    neg_sim: Tensor


def _query_logits(queries: Tensor, positives: Tensor, bank: Tensor,
                  index: Optional[Tensor]) -> Tensor:
    """(Q, 1+N) cosine logits [q·μ, q·k_1..N] in float32 (before 1/τ).
    ``bank`` is (Q, N, D) dense negatives when ``index`` is None, else a
    (P, D) bank indexed by (Q, N)."""
    if index is None:
        negatives = bank
    else:  # index_select: faster than bank[index] on CPU
        negatives = bank.index_select(0, index.reshape(-1)).view(
            *index.shape, bank.shape[-1])
    pos = (queries * positives).sum(-1, keepdim=True)
    neg = torch.einsum('qd,qnd->qn', queries, negatives)
    return torch.cat([pos, neg], dim=1)


@MODELS.register_module()
class T2SContrastiveLoss(nn.Module):
    """ℓ_c = mean_q −log( exp(q·μ_c/τ) / (exp(q·μ_c/τ) + Σ_n exp(q·k_n/τ)) )
    and L = loss_weight · (1/|P|) Σ_{c∈P} w_c ℓ_c (T2S-DA,
    Wang et al., arXiv 2305.13752, reconstructed; the prototype-as-positive
    form of ReCo's
    ``compute_reco_loss`` with U2PL-style sampled negatives).

    Queries, prototypes and negatives are expected L2-normalised. Prototypes
    and negatives are keys: they are detached here and never receive a
    gradient. Logits are computed in float32 with autocast disabled, so the
    loss is safe under mixed precision (exp(1/τ) with τ = 0.1 overflows no
    float32 logsumexp).

    Args:
        temperature (float): τ (0.1 default; the spec's sweep {0.07, 0.1,
            0.2, 0.5}).
        loss_weight (float): global factor λ.
        chunk_size (int): queries processed together; with
            ``recompute_negatives`` the gathered (chunk, N, D) negatives are
            rebuilt in the backward pass instead of being kept (memory
            ≈ Q·N floats instead of Q·N·D).
        recompute_negatives (bool): activation checkpointing of the logits.
    """

    def __init__(self,
                 temperature: float = 0.1,
                 loss_weight: float = 1.0,
                 chunk_size: int = 1024,
                 recompute_negatives: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f'temperature must be > 0, got {temperature}.')
        if chunk_size < 1:
            raise ValueError(f'chunk_size must be >= 1, got {chunk_size}.')
        self.temperature = temperature
        self.loss_weight = loss_weight
        self.chunk_size = chunk_size
        self.recompute_negatives = recompute_negatives

    def per_query_loss(self, queries: Tensor, query_labels: Tensor,
                       prototypes: Tensor, negatives: Tensor,
                       negative_index: Optional[Tensor] = None):
        """−log softmax at the positive for every query, and the positive /
        mean negative cosine similarities (detached)."""
        q_all = queries.float()
        protos = prototypes.detach().float()
        bank = negatives.detach().float()
        empty = q_all.new_zeros(0)
        losses, pos_sims, neg_sims = [empty], [empty], [empty]
        for start in range(0, q_all.shape[0], self.chunk_size):
            stop = start + self.chunk_size
            q = q_all[start:stop]
            pos = protos[query_labels[start:stop]]
            if negative_index is None:
                args = (q, pos, bank[start:stop], None)
            else:
                args = (q, pos, bank, negative_index[start:stop])
            if self.recompute_negatives and q.requires_grad:
                logits = checkpoint(_query_logits, *args, use_reentrant=False)
            else:
                logits = _query_logits(*args)
            scaled = logits / self.temperature
            losses.append(torch.logsumexp(scaled, dim=1) - scaled[:, 0])
            pos_sims.append(logits[:, 0].detach())
            neg_sims.append(logits[:, 1:].detach().mean(1))
        return torch.cat(losses), torch.cat(pos_sims), torch.cat(neg_sims)

    def forward(self,
                queries: Tensor,
                query_labels: Tensor,
                prototypes: Tensor,
                negatives: Tensor,
                negative_index: Optional[Tensor] = None,
                class_weights: Optional[Tensor] = None,
                class_query_counts: Optional[Tensor] = None,
                num_present: Optional[int] = None) -> T2SLossOutput:
        """
        Args:
            queries (Tensor): (Q, D) query embeddings (with gradient).
            query_labels (Tensor): (Q,) class of each query.
            prototypes (Tensor): (C, D) positive key per class.
            negatives (Tensor): (Q, N, D) negatives per query, or a (P, D)
                bank when ``negative_index`` (Q, N) indexes it.
            class_weights (Tensor, optional): (C,) w_c (default 1).
            class_query_counts (Tensor, optional): (C,) number of queries
                ℓ_c averages over (default: the queries of each class given
                here). A process that holds only part of the queries of a
                global batch passes the global counts, so the per-process
                losses sum to the global loss.
            num_present (int, optional): |P| (default: classes with
                queries).
        """
        if queries.dim() != 2 or query_labels.shape != queries.shape[:1]:
            raise ValueError(
                'T2SContrastiveLoss: queries must be (Q, D) with (Q,) labels, '
                f'got {tuple(queries.shape)} and {tuple(query_labels.shape)}.')
        num_classes, dim = prototypes.shape
        if dim != queries.shape[1]:
            raise ValueError(f'T2SContrastiveLoss: prototypes have dimension '
                             f'{dim}, queries {queries.shape[1]}.')
        if negative_index is None:
            if negatives.dim() != 3 or negatives.shape[0] != queries.shape[0]:
                raise ValueError(
                    'T2SContrastiveLoss: dense negatives must be (Q, N, D), '
                    f'got {tuple(negatives.shape)} for Q={queries.shape[0]}.')
        elif negative_index.dim() != 2 or \
                negative_index.shape[0] != queries.shape[0]:
            raise ValueError(
                'T2SContrastiveLoss: negative_index must be (Q, N), got '
                f'{tuple(negative_index.shape)} for Q={queries.shape[0]}.')
        if queries.shape[0] and (query_labels.min() < 0 or
                                 query_labels.max() >= num_classes):
            raise ValueError('T2SContrastiveLoss: query labels outside '
                             f'[0, {num_classes}).')
        device = queries.device
        with torch.autocast(device_type=device.type, enabled=False):
            per_query, pos_sim, neg_sim = self.per_query_loss(
                queries, query_labels, prototypes, negatives, negative_index)
            local = torch.bincount(query_labels, minlength=num_classes)
            counts = local if class_query_counts is None \
                else class_query_counts.to(device)
            class_sum = torch.zeros(num_classes, device=device).index_add(
                0, query_labels, per_query)
            mask = counts > 0
            per_class = class_sum / counts.clamp(min=1).float()
            weights = torch.ones(num_classes, device=device) \
                if class_weights is None else class_weights.to(device).float()
            present = int(mask.sum()) if num_present is None else num_present
            # 0·Σq keeps the graph connected when no class is present
            # (a DDP process then still produces (zero) gradients).
            loss = (per_class * weights * mask).sum() / max(present, 1) + \
                0.0 * queries.float().sum()
        return T2SLossOutput(
            loss=self.loss_weight * loss,
            per_class_loss=per_class.detach(),
            class_mask=mask,
            pos_sim=pos_sim,
            neg_sim=neg_sim)
