"""CDGA: cross-domain grouping and alignment (Kim, Joung, Kim, Park, Kim,
Sohn; AAAI 2021).

No official code exists and the paper's method section was not available:
everything below the verified outline (a learnable grouping network C that
splits both domains into K sub-spaces, one adversarial alignment per
sub-space, a semantic-consistency and an orthogonality loss on the groups,
a group-level class-equivalence scheme against class imbalance) is the
reconstruction of ``shared/docs/methods.md`` §3.2-3.6, every choice behind a
config switch. See ``docs/cdga.md``.
"""
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from mmseg.models.utils import resize
from torch import Tensor, nn

from mmseg_uda.registry import MODELS
from ..losses.class_balance_loss import ClassBalanceLoss
from ..losses.group_statistics import (group_class_distributions,
                                       one_hot_labels, stats_dtype)
from ..utils.functional import frozen_call
from .adversarial import AdaptSegNet, domain_bce
from .context import UDAContext

_GROUPING_INPUTS = ('softmax', 'feature')
_SOURCE_STATS = ('label', 'prediction')


@MODELS.register_module()
class CDGA(AdaptSegNet):
    """Cross-domain grouping and alignment, reconstructed (methods.md §3).

    Per domain d, with P^d the segmentation softmax (AdaptSegNet's
    discriminator input, upsampled to the image size by default):

    - the grouping network C (:class:`CrossDomainGroupingNetwork`, shared by
      both domains) gives a soft assignment A^d ∈ Δ^K per pixel;
    - group maps P^{d,(k)} = A^d_k ⊙ P^d, k = 1..K;
    - group class distributions q^d_k (§3.3 item 2; source from labels,
      target from P^t), summed over the global batch;
    - segmentor objective (G and C):
      λ_adv·(1/K) Σ_k BCE(D_k(P^{t,(k)}), source) (``loss_adv``, D frozen)
      + L_sc(q^s, q^t) (``loss_consist``) + L_orth(q^s, q^t) (``loss_orth``);
    - discriminator objective: ½·(1/K) Σ_k [BCE(D_k(P^{s,(k)}), source) +
      BCE(D_k(P^{t,(k)}), target)] on detached maps (``loss_D``);
    - with ``class_balance`` every BCE above is the class-balanced
      :class:`ClassBalanceLoss` (source: labels, target: argmax P^t).

    AdaptSegNet's labels (source 0, target 1), its ½ on the discriminator
    loss and its update order (methods.md §3.5) come from the pipeline:
    :class:`AdaptSegNet` supplies the discriminator input and label
    convention, ``frozen_call`` keeps the generator loss out of D, and
    ``UDASegmentor`` steps the segmentor (G and C) and discriminator
    optimizers after both backwards. With ``num_groups=1``,
    ``consistency_loss=None``, ``orthogonality_loss=None`` and
    ``class_balance=False`` it is exactly single-level AdaptSegNet (A ≡ 1,
    C gets zero gradients).

    Reconstructed switches ([RECON], methods.md §3.2-3.3):

    Args:
        num_classes (int): L, channels of the segmentation output.
        num_groups (int): K, number of groups (8).
        lambda_adv (float): weight of the group adversarial loss (0.001,
            AdaptSegNet's single-level ``LAMBDA_ADV_TARGET2``).
        discriminator (dict): the D config (AdaptSegNet ``FCDiscriminator``);
            ``in_channels`` is filled in.
        shared_discriminator (bool): False (default): K discriminators, D_k
            sees P^(k). True: one D whose input is concat(P^(k),
            one-hot(k)) (L + K channels), cheaper.
        grouping (dict): config of C (``CrossDomainGroupingNetwork``);
            ``in_channels`` and ``num_groups`` are filled in.
        grouping_input (str): C's input: ``'softmax'`` (default) the
            segmentation softmax at the head's stride; ``'feature'`` the
            decode head's input feature (layer4, 2048 ch for DeepLab-V2),
            whose channels must be given as ``feature_channels``.
        feature_channels (int, optional): see ``grouping_input``.
        consistency_loss (dict, optional): ``SemanticConsistencyLoss``
            config (λ_sc = 0.1, L1; ``distance='sym_kl'`` switch), None =
            off.
        orthogonality_loss (dict, optional): ``ClusterOrthogonalityLoss``
            config (λ_orth = 0.1), None = off.
        class_balance (bool): group-level class equivalence (§3.3 item 6):
            the adversarial BCEs (``loss_adv`` and ``loss_D``) become the
            class-balanced :class:`ClassBalanceLoss`.
        source_stats (str): q^s from the source ``'label'`` (default, ignore
            pixels excluded) or the source ``'prediction'`` P^s (all
            pixels).
        detach_grouping_input (bool): C sees a detached P (or feature), so
            no loss reaches the segmentor through C's input (default False:
            it does).
        detach_stats_prob (bool): the predictions P inside q^t (and q^s
            with ``source_stats='prediction'``) are detached, so L_sc and
            L_orth reach the segmentor only through C's input (default
            False: also through P).
        stats_eps (float): ε of the group histograms' denominators.
        upsample_to_input (bool): D inputs, group maps and statistics at the
            image size (AdaptSegNet, default) or at the head's stride.
        log_group_stats (bool): log per group the dominant class of q^s_k /
            q^t_k, its share, and the group's pixel share.
        source_label / target_label (float): D's domain labels (0 / 1).
    """
    student_domains = ('source', 'target')
    d_input = 'softmax'

    def __init__(self,
                 num_classes: int = 19,
                 num_groups: int = 8,
                 lambda_adv: float = 0.001,
                 discriminator: dict = dict(type='FCDiscriminator', ndf=64),
                 shared_discriminator: bool = False,
                 grouping: dict = dict(
                     type='CrossDomainGroupingNetwork', channels=256),
                 grouping_input: str = 'softmax',
                 feature_channels: Optional[int] = None,
                 consistency_loss: Optional[dict] = dict(
                     type='SemanticConsistencyLoss', distance='l1',
                     loss_weight=0.1),
                 orthogonality_loss: Optional[dict] = dict(
                     type='ClusterOrthogonalityLoss', loss_weight=0.1),
                 class_balance: bool = True,
                 source_stats: str = 'label',
                 detach_grouping_input: bool = False,
                 detach_stats_prob: bool = False,
                 stats_eps: float = 1e-6,
                 upsample_to_input: bool = True,
                 log_group_stats: bool = True,
                 source_label: float = 0.0,
                 target_label: float = 1.0,
                 loss_prefix: Optional[str] = None,
                 init_cfg: Optional[dict] = None):
        if not isinstance(num_groups, int) or num_groups < 1:
            raise ValueError(
                f'CDGA: num_groups must be a positive int, got {num_groups!r}')
        if grouping_input not in _GROUPING_INPUTS:
            raise ValueError(f'CDGA: grouping_input must be one of '
                             f'{_GROUPING_INPUTS}, got {grouping_input!r}')
        if grouping_input == 'feature' and not feature_channels:
            raise ValueError(
                "CDGA: grouping_input='feature' needs feature_channels (the "
                "decode head's input channels, 2048 for DeepLab-V2 layer4)")
        if source_stats not in _SOURCE_STATS:
            raise ValueError(f'CDGA: source_stats must be one of '
                             f'{_SOURCE_STATS}, got {source_stats!r}')
        # AdaptSegNet builds D_1 with in_channels = num_classes (same random
        # stream as AdaptSegNet itself, so K = 1 starts from the same D).
        super().__init__(
            num_classes=num_classes,
            lambda_adv=lambda_adv,
            discriminator=discriminator,
            upsample_to_input=upsample_to_input,
            source_label=source_label,
            target_label=target_label,
            loss_prefix=loss_prefix,
            init_cfg=init_cfg)
        self.num_groups = num_groups
        self.shared_discriminator = shared_discriminator
        if shared_discriminator:
            self.discriminator = MODELS.build(
                dict(discriminator, in_channels=num_classes + num_groups))
        else:
            self.discriminator = nn.ModuleList(
                [self.discriminator] + [
                    MODELS.build(dict(discriminator, in_channels=num_classes))
                    for _ in range(num_groups - 1)
                ])
        self.grouping_input = grouping_input
        self.needs_feat = grouping_input == 'feature'
        self.grouping = MODELS.build(
            dict(
                grouping,
                in_channels=feature_channels
                if grouping_input == 'feature' else num_classes,
                num_groups=num_groups))
        self.consistency_loss = MODELS.build(consistency_loss) \
            if consistency_loss is not None else None
        self.orthogonality_loss = MODELS.build(orthogonality_loss) \
            if orthogonality_loss is not None else None
        self.class_balance = class_balance
        self.class_balance_loss = ClassBalanceLoss(num_classes) \
            if class_balance else None
        self.source_stats = source_stats
        self.detach_grouping_input = detach_grouping_input
        self.detach_stats_prob = detach_stats_prob
        self.stats_eps = stats_eps
        self.log_group_stats = log_group_stats

    # ------------------------------------------------------------ grouping
    def group_maps(self, ctx: UDAContext, domain: str) -> Dict[str, Tensor]:
        """P (B, L, H, W) and A (B, K, H, W) of one domain at the
        discriminator's input size (with gradients), cached."""
        out = ctx.student_outputs(domain)
        key = 'CDGA.group_maps'
        if key in out.extras:
            return out.extras[key]
        prob = self.output_map(ctx, domain)
        if self.grouping_input == 'softmax':
            c_in = F.softmax(out.logits, dim=1)
        else:
            if out.feat is None:
                raise RuntimeError(
                    "CDGA: grouping_input='feature' but the student forward "
                    'captured no decode-head feature.')
            c_in = out.feat
            if c_in.shape[1] != self.grouping.in_channels:
                raise ValueError(
                    f'CDGA: feature_channels={self.grouping.in_channels} but '
                    f"the decode head's feature has {c_in.shape[1]} channels")
        if self.detach_grouping_input:
            c_in = c_in.detach()
        group_logits = self.grouping(c_in)
        if group_logits.shape[-2:] != prob.shape[-2:]:
            group_logits = resize(
                group_logits,
                size=prob.shape[-2:],
                mode='bilinear',
                align_corners=ctx.student.align_corners)
        maps = dict(prob=prob, assign=F.softmax(group_logits, dim=1))
        out.extras[key] = maps
        return maps

    def _discriminator_inputs(self, maps: Dict[str, Tensor],
                              detach: bool) -> List[Tensor]:
        prob, assign = maps['prob'], maps['assign']
        if detach:
            prob, assign = prob.detach(), assign.detach()
        inputs = [assign[:, k:k + 1] * prob for k in range(self.num_groups)]
        if self.shared_discriminator:
            b, _, h, w = prob.shape
            code = torch.eye(
                self.num_groups, dtype=prob.dtype, device=prob.device)
            inputs = [
                torch.cat([x, code[k].view(1, -1, 1, 1).expand(b, -1, h, w)],
                          dim=1) for k, x in enumerate(inputs)
            ]
        return inputs

    def _discriminate(self, inputs: List[Tensor], frozen: bool) -> Tensor:
        """Logits (K, B, 1, h, w) of D_k(P^(k)) (or the shared D)."""
        if self.shared_discriminator:
            batch = inputs[0].shape[0]
            stacked = torch.cat(inputs, dim=0)
            logits = frozen_call(self.discriminator, stacked) if frozen \
                else self.discriminator(stacked)
            return logits.view(self.num_groups, batch, *logits.shape[1:])
        return torch.stack([
            frozen_call(d, x) if frozen else d(x)
            for d, x in zip(self.discriminator, inputs)
        ])

    def _class_map(self, ctx: UDAContext, domain: str) -> Tensor:
        """ĉ of the class-equivalence weights: source labels, target argmax
        of P^t."""
        if domain == 'source':
            return ctx.src_label
        return self.group_maps(ctx, 'target')['prob'].detach().argmax(1)

    def _adversarial(self, ctx: UDAContext, logits: Tensor, domain: str,
                     label: float) -> Tensor:
        """(1/K) Σ_k BCE(logits_k, label), plain or class-balanced."""
        if not self.class_balance:
            return sum(domain_bce(d, label) for d in logits) / len(logits)
        out = ctx.student_outputs(domain)
        key = 'CDGA.cell_weight'
        if key not in out.extras:
            out.extras[key] = self.class_balance_loss.cell_weights(
                self._class_map(ctx, domain), logits.shape[-2:],
                ignore_index=ctx.ignore_index, dtype=logits.dtype)
        return self.class_balance_loss(
            logits, label, cell_weight=out.extras[key])

    def _source_label_at(self, ctx: UDAContext, size) -> Tensor:
        label = ctx.src_label
        if label.shape[-2:] != tuple(size):
            label = resize(
                label.unsqueeze(1).float(), size=size,
                mode='nearest').squeeze(1).long()
        return label

    def group_distributions(self, ctx: UDAContext) -> Dict[str, Tensor]:
        """q^s, q^t (K, L) and group masses, summed over the global batch
        (methods.md §3.3 item 2)."""
        src, tgt = self.group_maps(ctx, 'source'), self.group_maps(
            ctx, 'target')

        def prob(maps):
            return maps['prob'].detach() if self.detach_stats_prob \
                else maps['prob']

        if self.source_stats == 'label':
            label = self._source_label_at(ctx, src['prob'].shape[-2:])
            src_class, src_valid = one_hot_labels(
                label, self.num_classes, ctx.ignore_index,
                stats_dtype(src['assign'].dtype))
        else:
            src_class, src_valid = prob(src), None
        q_s, mass_s = group_class_distributions(
            src['assign'], src_class, src_valid, eps=self.stats_eps)
        q_t, mass_t = group_class_distributions(
            tgt['assign'], prob(tgt), None, eps=self.stats_eps)
        return dict(q_s=q_s, q_t=q_t, mass_s=mass_s, mass_t=mass_t)

    # -------------------------------------------------------------- losses
    def loss(self, ctx: UDAContext) -> Dict[str, Tensor]:
        tgt = self.group_maps(ctx, 'target')
        d_tgt = self._discriminate(
            self._discriminator_inputs(tgt, detach=False), frozen=True)
        losses = {
            'loss_adv':
            self.lambda_adv *
            self._adversarial(ctx, d_tgt, 'target', self.source_label)
        }
        needs_stats = self.consistency_loss is not None or \
            self.orthogonality_loss is not None or self.log_group_stats
        if needs_stats:
            stats = self.group_distributions(ctx)
            if self.consistency_loss is not None:
                losses[self.consistency_loss.loss_name] = \
                    self.consistency_loss(stats['q_s'], stats['q_t'])
            if self.orthogonality_loss is not None:
                losses[self.orthogonality_loss.loss_name] = \
                    self.orthogonality_loss(stats['q_s'], stats['q_t'])
            if self.log_group_stats:
                losses.update(self._group_logs(stats))
        if ctx.debug:
            for domain in ('source', 'target'):
                assign = self.group_maps(ctx, domain)['assign'].detach()
                if assign.shape[-2:] != ctx.img(domain).shape[-2:]:
                    assign = resize(
                        assign,
                        size=ctx.img(domain).shape[-2:],
                        mode='bilinear',
                        align_corners=ctx.student.align_corners)
                ctx.add_debug_map(f'{domain}_groups', assign.argmax(1))
        return losses

    def discriminator_loss(self, ctx: UDAContext) -> Dict[str, Tensor]:
        terms = []
        for domain, label in (('source', self.source_label),
                              ('target', self.target_label)):
            maps = self.group_maps(ctx, domain)
            logits = self._discriminate(
                self._discriminator_inputs(maps, detach=True), frozen=False)
            terms.append(self._adversarial(ctx, logits, domain, label))
        return {'loss_D': 0.5 * (terms[0] + terms[1])}

    # ------------------------------------------------------------- logging
    def _group_logs(self, stats: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Degenerate-solution monitors (methods.md §3.6), logged only (no
        'loss' in the keys): group-usage entropy H(mean_p A(p)) in nats
        (healthy: > log(K)/2, maximum log K), and per group
        its pixel share, dominant class and that class's share of q_k."""
        logs = {}
        for tag, dom in (('src', 's'), ('tgt', 't')):
            mass = stats[f'mass_{dom}'].detach()
            usage = mass / mass.sum().clamp_min(self.stats_eps)
            logs[f'group_entropy_{tag}'] = -(
                usage * torch.log(usage.clamp_min(1e-12))).sum()
            q = stats[f'q_{dom}'].detach()
            share, cls = q.max(dim=1)
            share = share / q.sum(dim=1).clamp_min(self.stats_eps)
            for k in range(self.num_groups):
                logs[f'group{k}_{tag}_class'] = cls[k].float()
                logs[f'group{k}_{tag}_class_share'] = share[k]
                logs[f'group{k}_{tag}_pixel_share'] = usage[k]
        return logs
