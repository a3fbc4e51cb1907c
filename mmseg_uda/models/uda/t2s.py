"""T2S-DA: pulling target to source (Wang et al., arXiv 2305.13752 / IJCV).

No official code exists and only the abstract could be read; everything
below is reconstructed, each [RECON] choice behind a constructor argument;
``docs/t2s.md`` gives each choice, its alternatives and the reason.

Per iteration (default ``direction='t2s'``):

1. x̃_s = T(x_s, x_t): each source crop stylised with a random target crop
   of the (global) batch, FDA by default; labels y_s stay aligned.
2. Queries: student(x̃_s) decode-head feature -> student projection head.
   Keys: EMA teacher(x_s) feature -> EMA projection head (no gradient).
3. Labels nearest- (or ratio-) downsampled to the feature grid.
4. Per class c of the batch: prototype μ_c = normalise(mean of the keys
   of c) (or an EMA prototype), M queries of c, N negatives per query from
   per-class FIFO queues of keys of the other classes (in-batch keys for
   classes whose queue is still empty), category-wise InfoNCE
   (:class:`~mmseg_uda.models.losses.T2SContrastiveLoss`).
5. Dynamic re-weighting w_c = (1 − r_c)^γ / mean_{present}(1 − r_c')^γ with
   r_c an EMA of the teacher's mean confidence on target pixels
   pseudo-labelled c (or the running IoU on x̃_s).
6. The sampled keys are enqueued.

Distributed training: the per-class key sums, the keys to enqueue and the
r_c statistics are reduced over processes, so prototypes, queues and r_c
are identical on every process. All random draws (target pairing, random
style, enqueued keys, queries, negatives) come from a CPU generator seeded
with ``seed`` and the iteration, and index the *global* batch in the
sampler's numbering (image g = i·world_size + rank, see
:mod:`mmseg_uda.models.utils.global_batch`; pixels in (image, row, column)
order): every process draws the same numbers, evaluates the queries that
live on it, and the per-process losses sum to the loss of one process
holding the whole batch (returned with a gradient factor of world_size, as
DDP averages gradients). A W-process run therefore equals a 1-process run
on the global batch the sampler hands out with world_size 1
(``tests/test_t2s_distributed.py``). Every process must hold the same number
of images (what a fixed ``batch_size`` gives); otherwise T2S raises.
"""
import copy
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.dist import all_reduce, get_rank, get_world_size
from mmseg.models.utils import resize
from torch import Tensor

from mmseg_uda.engine.hooks.ema_teacher_hook import ema_momentum
from mmseg_uda.registry import MODELS
from ..losses.t2s_contrastive_loss import T2SContrastiveLoss  # noqa: F401
from ..modules.projection_head import ProjectionHead  # noqa: F401
from ..utils.global_batch import (gather_global, global_indices,
                                  rank_and_local_index)
from ..utils.style_transfer import BaseStyleTransfer
from .base import BaseUDAMethod
from .context import UDAContext

DIRECTIONS = ('t2s', 's2t', 'both')
TARGET_SIDES = ('stylised', 'target_pseudo', 'both')
PERF_METRICS = ('target_confidence', 'stylised_iou')
KEY_MODELS = ('teacher', 'student_sg')
# queue/prototype state per key side: 'source' keys serve t2s, 'target'
# (target-side) keys serve s2t.
KEY_SIDE = {'t2s': 'source', 's2t': 'target'}


class Samples(NamedTuple):
    """Flattened valid pixels of one feature map: (n, D) embeddings, (n,)
    labels and (n,) local image indices, in (image, row, column) order, of
    a local batch of ``num_images`` images. ``image=None``: all rows come
    from one image."""
    rows: Tensor
    labels: Tensor
    image: Optional[Tensor] = None
    num_images: int = 1

    def image_class_counts(self, num_classes: int) -> Tensor:
        """(num_images, num_classes) pixel counts, on the CPU."""
        labels = self.labels.cpu()
        image = torch.zeros_like(labels) if self.image is None \
            else self.image.cpu()
        return torch.bincount(
            image * num_classes + labels,
            minlength=self.num_images * num_classes).view(
                self.num_images, num_classes)


def downsample_labels(labels: Tensor,
                      size: Sequence[int],
                      mode: str = 'nearest',
                      num_classes: Optional[int] = None,
                      ignore_index: int = 255,
                      min_ratio: float = 0.75) -> Tensor:
    """Labels (B, H, W) -> (B, h, w) on a feature grid.

    ``nearest``: nearest-neighbour sampling. ``ratio``: majority class of
    each H/h × W/w block, kept only if it covers at least ``min_ratio`` of
    the block, else ``ignore_index`` (ignored pixels count as a class of
    their own); the scheme of DAFormer's ``downscale_label_ratio``
    (lhoyer/DAFormer ``mmseg/models/utils/dacs_transforms.py``; also used
    by SePiCo). Needs integer strides.
    """
    h, w = int(size[0]), int(size[1])
    if labels.shape[-2:] == (h, w):
        return labels
    if mode == 'nearest':
        return F.interpolate(
            labels[:, None].float(), size=(h, w),
            mode='nearest')[:, 0].long()
    if mode != 'ratio':
        raise ValueError(
            f"label downsampling mode must be 'nearest' or 'ratio', got "
            f'{mode!r}.')
    big_h, big_w = labels.shape[-2:]
    if big_h % h or big_w % w or big_h // h != big_w // w:
        raise ValueError(
            f"label_downsample='ratio' needs one integer stride, got labels "
            f'{big_h}x{big_w} for a {h}x{w} feature grid.')
    if num_classes is None:
        raise ValueError("label_downsample='ratio' needs num_classes.")
    stride = big_h // h
    lab = labels.clone()
    lab[(lab == ignore_index) | (lab < 0) | (lab >= num_classes)] = \
        num_classes
    one_hot = F.one_hot(lab, num_classes + 1).permute(0, 3, 1, 2).float()
    share = F.avg_pool2d(one_hot, stride)
    ratio, cls = share.max(dim=1)
    cls[(cls == num_classes) | (ratio < min_ratio)] = ignore_index
    return cls


def class_weights_from_performance(performance: Tensor,
                                   present: Tensor,
                                   gamma: float = 1.0,
                                   eps: float = 1e-6) -> Tensor:
    """Dynamic re-weighting (reconstructed, see docs/t2s.md):
    w_c = (1 − r_c)^γ / mean_{c'∈present} (1 − r_c')^γ, so the present
    classes' weights average to 1 and underperforming classes (small r_c)
    weigh more. All ones when no class is present or every present class
    has r = 1."""
    raw = (1.0 - performance.float()).clamp(min=0.0)**gamma
    if not bool(present.any()):
        return torch.ones_like(raw)
    denom = raw[present].mean()
    if float(denom) <= eps:
        return torch.ones_like(raw)
    return raw / denom


class _GlobalIndex:
    """Maps indices of the global candidate list of one class to the rows
    held by this process.

    The global list of a class is: segment by segment (e.g. stylised
    source pixels, then confident target pixels), inside a segment image by
    image in global batch order (g = i·world_size + rank,
    :mod:`~mmseg_uda.models.utils.global_batch`), and each image's rows in
    (row, column) order. With one process this is the order of the rows.
    """

    def __init__(self, segments: Sequence[Samples], num_classes: int):
        if not segments:
            raise ValueError('T2S: no query/key samples were built.')
        self.world, self.rank = get_world_size(), get_rank()
        self.segments = segments
        # per segment: class counts per local image (B, C) and per global
        # image (B·W, C) (identical on every process)
        self.local_counts, self.global_counts = [], []
        # rows of class c of local image i in segment s:
        # order[s][start[s][i, c]:...]
        self.order, self.start = [], []
        for s in segments:
            counts = s.image_class_counts(num_classes)
            self.local_counts.append(counts)
            self.global_counts.append(gather_global(counts).cpu())
            self.order.append(torch.argsort(s.labels, stable=True))
            class_start = torch.cumsum(counts.sum(0), 0) - counts.sum(0)
            image_start = torch.cumsum(counts, 0) - counts
            self.start.append(class_start[None] + image_start)
        self.total = sum(g.sum(0) for g in self.global_counts)

    def select(self, cls: int, index: Tensor) -> Tuple[Tensor, Tensor]:
        """The rows selected by global indices ``index`` (K,) of class
        ``cls`` that this process holds, and their positions in
        ``index``."""
        blocks = torch.cat([g[:, cls] for g in self.global_counts])
        segment_of = torch.cat([
            torch.full((g.shape[0], ), s, dtype=torch.long)
            for s, g in enumerate(self.global_counts)
        ])
        image_of = torch.cat(
            [torch.arange(g.shape[0]) for g in self.global_counts])
        ends = torch.cumsum(blocks, 0)
        block = torch.searchsorted(ends, index, right=True)
        within = index - (ends - blocks)[block]
        rows, positions = [], []
        for s, samples in enumerate(self.segments):
            in_segment = torch.nonzero(segment_of[block] == s).flatten()
            rank, image = rank_and_local_index(
                image_of[block[in_segment]], self.local_counts[s].shape[0])
            mine = rank == self.rank
            local = self.order[s][(self.start[s][image[mine], cls] +
                                   within[in_segment[mine]]).to(
                                       self.order[s].device)]
            rows.append(samples.rows[local])
            positions.append(in_segment[mine])
        return torch.cat(rows), torch.cat(positions)


@MODELS.register_module()
class T2S(BaseUDAMethod):
    """T2S-DA, pulling target to source (Wang et al., arXiv 2305.13752;
    reconstructed, no official code is public; see docs/t2s.md).

    Composed with the DAFormer self-training base:
    ``methods=[dict(type='SelfTraining', ...), dict(type='T2S', ...)]``.
    Logged keys (prefix ``t2s.``): ``loss_t2s`` (summed into the objective),
    ``contrast.<class>`` (ℓ_c), ``w.<class>`` (w_c), ``queue_fill``,
    ``present_classes``, ``pos_sim``/``neg_sim`` (mean cosine similarity of
    the queries to their prototype / negatives), ``perf_mean`` (mean r_c
    over present classes); with ``stylised_ce_weight > 0`` also
    ``loss_ce_stylised`` and ``acc_stylised``.

    Args:
        num_classes (int): classes of the segmentation head.
        class_names (sequence, optional): names for the per-class log keys
            (default: class indices).
        projection_head (dict): student projection head; an EMA copy makes
            the keys. ``in_channels`` = decode-head feature width.
        loss (dict): :class:`T2SContrastiveLoss` config (τ = 0.1; its
            ``loss_weight`` is λ_T2S = 1.0).
        direction (str): ``'t2s'`` (queries on the target side, keys from
            the source, the paper's claim), ``'s2t'`` (roles swapped) or
            ``'both'`` (mean of the two) [RECON ablation switch].
        style (dict): stylisation T (default ``FDAStyleTransfer``, β 0.01;
            ``LabStyleTransfer``; ``RandomStyleTransfer`` for DG) [RECON].
        target_side (str): target-side samples: ``'stylised'`` x̃_s with
            y_s (default), ``'target_pseudo'`` real target pixels with a
            teacher confidence ≥ ``pseudo_threshold`` and their
            pseudo-labels, or ``'both'`` [RECON item 1b].
        pseudo_threshold (float): confidence threshold for
            ``target_pseudo`` (DAFormer's 0.968).
        key_model (str): ``'teacher'`` (EMA teacher + EMA projection head,
            default) or ``'student_sg'`` (student features and head,
            detached) [RECON item 2].
        num_queries (int): M queries per class (with replacement only if
            the class has fewer pixels).
        num_negatives (int): N negatives per query (uniform with
            replacement over the negative pool).
        queue_length (int): FIFO queue length per class.
        enqueue_per_class (int): keys of each class sampled from the global
            batch and enqueued per iteration (and the in-batch negatives of
            classes whose queue is empty) [RECON; the queue then spans at
            least queue_length / enqueue_per_class iterations].
        prototype_momentum (float, optional): None = prototypes from the
            current batch's keys (default); e.g. 0.999 = EMA prototypes.
        label_downsample (str): ``'nearest'`` or ``'ratio'``.
        label_min_ratio (float): ``min_ratio`` of ``'ratio'``.
        reweight (bool): dynamic re-weighting on/off.
        reweight_gamma (float): γ.
        reweight_sampling (bool): also scale M per class by w_c.
        perf_metric (str, optional): r_c source: ``'target_confidence'``
            (default for UDA) or ``'stylised_iou'`` (default in DG mode).
        perf_momentum (float): EMA momentum of r_c per iteration.
        projection_ema_alpha (float): α of the EMA projection head; keep
            equal to ``EMATeacherHook.alpha`` (DAFormer 0.999).
        stylised_ce_weight (float): weight of an extra CE on student(x̃_s)
            with y_s (0 = off) [RECON item 6].
        dg_mode (bool): domain generalisation: no target images (the batch
            has only 'source'), random style, r_c from the stylised IoU.
        seed (int): seed of the sampling generator (combined with the
            iteration).
        log_per_class (bool): log ``contrast.<class>`` and ``w.<class>``.
    """
    requires_teacher = True
    needs_feat = True
    student_domains = ('source', )

    def __init__(self,
                 num_classes: int = 19,
                 class_names: Optional[Sequence[str]] = None,
                 projection_head: dict = dict(
                     type='ProjectionHead',
                     in_channels=256,
                     hidden_channels=256,
                     out_channels=128),
                 loss: dict = dict(
                     type='T2SContrastiveLoss',
                     temperature=0.1,
                     loss_weight=1.0),
                 direction: str = 't2s',
                 style: dict = dict(type='FDAStyleTransfer', beta=0.01),
                 target_side: str = 'stylised',
                 pseudo_threshold: float = 0.968,
                 key_model: str = 'teacher',
                 num_queries: int = 256,
                 num_negatives: int = 256,
                 queue_length: int = 2048,
                 enqueue_per_class: int = 256,
                 prototype_momentum: Optional[float] = None,
                 label_downsample: str = 'nearest',
                 label_min_ratio: float = 0.75,
                 reweight: bool = True,
                 reweight_gamma: float = 1.0,
                 reweight_sampling: bool = False,
                 perf_metric: Optional[str] = None,
                 perf_momentum: float = 0.99,
                 projection_ema_alpha: float = 0.999,
                 stylised_ce_weight: float = 0.0,
                 dg_mode: bool = False,
                 seed: int = 0,
                 log_per_class: bool = True,
                 loss_prefix: Optional[str] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(loss_prefix=loss_prefix, init_cfg=init_cfg)
        self._check_choice('direction', direction, DIRECTIONS)
        self._check_choice('target_side', target_side, TARGET_SIDES)
        self._check_choice('key_model', key_model, KEY_MODELS)
        self._check_choice('label_downsample', label_downsample,
                           ('nearest', 'ratio'))
        if perf_metric is None:
            perf_metric = 'stylised_iou' if dg_mode else 'target_confidence'
        self._check_choice('perf_metric', perf_metric, PERF_METRICS)
        for name, value in (('num_queries', num_queries),
                            ('num_negatives', num_negatives),
                            ('queue_length', queue_length),
                            ('enqueue_per_class', enqueue_per_class),
                            ('num_classes', num_classes)):
            if int(value) < 1:
                raise ValueError(f'T2S: {name} must be >= 1, got {value}.')
        for name, value in (('perf_momentum', perf_momentum),
                            ('projection_ema_alpha', projection_ema_alpha)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f'T2S: {name} must be in [0, 1), got '
                                 f'{value}.')
        if prototype_momentum is not None and \
                not 0.0 <= prototype_momentum < 1.0:
            raise ValueError('T2S: prototype_momentum must be None or in '
                             f'[0, 1), got {prototype_momentum}.')
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f'T2S: {len(class_names)} class_names for '
                             f'num_classes={num_classes}.')

        self.num_classes = int(num_classes)
        self.class_names = [str(n) for n in class_names] if class_names \
            else [str(i) for i in range(num_classes)]
        self.direction = direction
        self.target_side = target_side
        self.pseudo_threshold = pseudo_threshold
        self.key_model = key_model
        self.num_queries = int(num_queries)
        self.num_negatives = int(num_negatives)
        self.queue_length = int(queue_length)
        self.enqueue_per_class = int(enqueue_per_class)
        self.prototype_momentum = prototype_momentum
        self.label_downsample = label_downsample
        self.label_min_ratio = label_min_ratio
        self.reweight = reweight
        self.reweight_gamma = reweight_gamma
        self.reweight_sampling = reweight_sampling
        self.perf_metric = perf_metric
        self.perf_momentum = perf_momentum
        self.projection_ema_alpha = projection_ema_alpha
        self.stylised_ce_weight = stylised_ce_weight
        self.dg_mode = dg_mode
        self.seed = int(seed)
        self.log_per_class = log_per_class

        self.style: BaseStyleTransfer = MODELS.build(style)
        if not isinstance(self.style, BaseStyleTransfer):
            raise TypeError(f'T2S: style must build a BaseStyleTransfer, got '
                            f'{type(self.style).__name__}.')
        if dg_mode:
            if self.style.requires_target:
                raise ValueError(
                    'T2S: dg_mode=True has no target images, but style '
                    f'{type(self.style).__name__} needs one; use '
                    "style=dict(type='RandomStyleTransfer').")
            if target_side != 'stylised':
                raise ValueError("T2S: dg_mode=True needs target_side="
                                 "'stylised' (there are no target pixels).")
            if perf_metric == 'target_confidence':
                raise ValueError("T2S: dg_mode=True needs perf_metric="
                                 "'stylised_iou' (no target images).")
        if target_side != 'stylised':
            self.student_domains = ('source', 'target')

        self.proj_head = MODELS.build(projection_head)
        self.proj_head_ema = copy.deepcopy(self.proj_head)
        self.proj_head_ema.requires_grad_(False)
        self.loss_fn = MODELS.build(loss)

        c, length = self.num_classes, self.queue_length
        dim = self.proj_head.out_channels
        for side in self._key_sides():
            self.register_buffer(f'queue_{side}', torch.zeros(c, length, dim))
            self.register_buffer(f'queue_ptr_{side}',
                                 torch.zeros(c, dtype=torch.long))
            self.register_buffer(f'queue_fill_{side}',
                                 torch.zeros(c, dtype=torch.long))
            self.register_buffer(f'prototypes_{side}', torch.zeros(c, dim))
            self.register_buffer(f'prototype_valid_{side}',
                                 torch.zeros(c, dtype=torch.bool))
        self.register_buffer('perf_estimate', torch.zeros(c))
        self.register_buffer('perf_initialized',
                             torch.zeros(c, dtype=torch.bool))
        self.register_buffer('class_weights', torch.ones(c))
        # iteration of the last EMA update of proj_head_ema (-1: never)
        self.register_buffer('projection_ema_iter',
                             torch.tensor(-1, dtype=torch.long))

    # ----------------------------------------------------------- helpers
    @staticmethod
    def _check_choice(name, value, choices):
        if value not in choices:
            raise ValueError(f'T2S: {name} must be one of {choices}, got '
                             f'{value!r}.')

    def _key_sides(self) -> List[str]:
        dirs = ('t2s', 's2t') if self.direction == 'both' \
            else (self.direction, )
        return [KEY_SIDE[d] for d in dirs]

    def frozen_modules(self):
        return [self.proj_head_ema]

    def queue_state(self, side: str) -> Dict[str, Tensor]:
        """The queue/prototype buffers of one key side."""
        return {
            name: getattr(self, f'{name}_{side}')
            for name in ('queue', 'queue_ptr', 'queue_fill', 'prototypes',
                         'prototype_valid')
        }

    def generator(self, iteration: int) -> torch.Generator:
        """CPU generator for the draws of one iteration; the same on every
        process and for a resumed run."""
        return torch.Generator().manual_seed(
            (self.seed * 1_000_003 + int(iteration)) % (2**62))

    @torch.no_grad()
    def update_projection_ema(self, iteration: int) -> None:
        """proj_head_ema ← a·proj_head_ema + (1 − a)·proj_head with
        a = min(1 − 1/(t+1), α) (the teacher's rule, ``EMATeacherHook``).

        Called at the start of iteration t, i.e. after the student's t-th
        optimizer step, which is when ``EMATeacherHook`` (after iteration
        t − 1, momentum of step t) has updated the teacher: the two EMAs
        stay in step. t = 0 (or a head never updated) copies the student
        head. Repeated calls in one iteration update once; the iteration of
        the last update is a checkpointed buffer, so resume is exact.
        Parameters only (the EMA head keeps its own BN statistics, as the
        teacher does).
        """
        last = int(self.projection_ema_iter)
        if iteration <= last:
            return
        momentum = 0.0 if last < 0 else ema_momentum(iteration,
                                                     self.projection_ema_alpha)
        for ema, cur in zip(self.proj_head_ema.parameters(),
                            self.proj_head.parameters()):
            ema.mul_(momentum).add_(cur.detach(), alpha=1.0 - momentum)
        self.projection_ema_iter.fill_(iteration)

    @staticmethod
    def enqueue(queue: Tensor, ptr: Tensor, fill: Tensor, cls: int,
                keys: Tensor) -> None:
        """FIFO: write ``keys`` (k, D) into the ring buffer of class
        ``cls`` at its pointer, overwriting the oldest entries; only the
        newest ``queue_length`` survive when k exceeds it."""
        length = queue.shape[1]
        if keys.shape[0] == 0:
            return
        keys = keys[-length:]
        k = keys.shape[0]
        start = int(ptr[cls])
        slots = (start + torch.arange(k, device=queue.device)) % length
        queue[cls, slots] = keys.to(queue)
        ptr[cls] = (start + k) % length
        fill[cls] = min(int(fill[cls]) + k, length)

    def _labels_on(self, ctx: UDAContext, size) -> Tensor:
        return downsample_labels(ctx.src_label, size, self.label_downsample,
                                 self.num_classes, ctx.ignore_index,
                                 self.label_min_ratio)

    def _samples(self, emb: Tensor, labels: Tensor,
                 ignore_index: int) -> Samples:
        if emb.shape[-2:] != labels.shape[-2:]:
            raise ValueError(f'T2S: embedding grid {tuple(emb.shape[-2:])} '
                             f'and label grid {tuple(labels.shape[-2:])} '
                             'differ.')
        rows = emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1])
        lab = labels.reshape(-1)
        valid = (lab != ignore_index) & (lab >= 0) & (lab < self.num_classes)
        idx = torch.nonzero(valid).flatten()
        image = torch.div(idx, lab.numel() // labels.shape[0],
                          rounding_mode='floor')
        return Samples(rows[idx], lab[idx], image, int(labels.shape[0]))

    def _key_embedding(self, feat: Tensor) -> Tensor:
        with torch.no_grad():
            head = self.proj_head if self.key_model == 'student_sg' \
                else self.proj_head_ema
            return head(feat.detach()).float()

    # --------------------------------------------------------- stylising
    @torch.no_grad()
    def stylise_source(self, ctx: UDAContext,
                       generator: torch.Generator) -> Tensor:
        """x̃_s for the local source crops (normalised network input).

        Target statistics are gathered in global batch order and each
        source image of the global batch is paired with a uniformly drawn
        target image of the global batch, so the pairing is the same on
        every process (and the same as with one process)."""
        src = ctx.img('source')
        local = global_indices(src.shape[0])  # checks equal local sizes
        total = src.shape[0] * get_world_size()
        rgb = bool(getattr(ctx.preprocessor, 'channel_conversion', False))
        pixels = ctx.denormalize(src.float())
        stats = params = None
        if self.style.requires_target:
            if 'target' not in ctx.inputs:
                raise ValueError(
                    'T2S: the batch has no target images but the style '
                    f'{type(self.style).__name__} needs them; for domain '
                    "generalisation set dg_mode=True and style=dict(type="
                    "'RandomStyleTransfer').")
            tgt = ctx.denormalize(ctx.img('target').float())
            all_stats = gather_global(
                self.style.target_statistics(tgt, src.shape[-2:], rgb))
            pairing = torch.randint(
                all_stats.shape[0], (total, ), generator=generator)
            stats = all_stats[pairing[local].to(all_stats.device)]
        params = self.style.sample_parameters(total, src.shape[-2:],
                                              generator)
        if params is not None:
            params = params[local]
        out = self.style.stylise(pixels, stats, params, rgb)
        return ctx.renormalize(out).to(src.dtype)

    # ------------------------------------------------- class performance
    @torch.no_grad()
    def update_performance(self, numerator: Tensor,
                           denominator: Tensor) -> None:
        """r_c ← m·r_c + (1 − m)·(numerator_c / denominator_c) for the
        classes observed this iteration (denominator > 0); the first
        observation of a class initialises r_c. Inputs are global sums."""
        observed = denominator > 0
        batch = numerator.float() / denominator.float().clamp(min=1e-12)
        first = observed & ~self.perf_initialized
        again = observed & self.perf_initialized
        m = self.perf_momentum
        self.perf_estimate[first] = batch[first]
        self.perf_estimate[again] = m * self.perf_estimate[again] + \
            (1.0 - m) * batch[again]
        self.perf_initialized |= observed

    @torch.no_grad()
    def _performance_statistics(self, ctx: UDAContext,
                                stylised_logits: Optional[Tensor]):
        c = self.num_classes
        if self.perf_metric == 'target_confidence':
            prob = F.softmax(ctx.teacher_outputs('target').logits.float(), 1)
            conf, label = prob.max(1)
            num = torch.bincount(label.flatten(), conf.flatten(), c)
            den = torch.bincount(label.flatten(), minlength=c).float()
        else:
            pred = stylised_logits.argmax(1)
            lab = downsample_labels(ctx.src_label, pred.shape[-2:],
                                    'nearest')
            valid = (lab != ctx.ignore_index) & (lab >= 0) & (lab < c)
            lab, pred = lab[valid], pred[valid]
            num = torch.bincount(lab[pred == lab], minlength=c).float()
            den = torch.bincount(lab, minlength=c).float() + \
                torch.bincount(pred, minlength=c).float() - num
        stats = torch.stack([num.float(), den])
        all_reduce(stats)
        return stats[0], stats[1]

    # ------------------------------------------------------ contrastive
    def _negative_pools(self, state: Dict[str, Tensor],
                        inbatch_len: Tensor) -> List[Tensor]:
        """Per class c, positions in the bank [queues; in-batch keys] of
        the keys of every other class (its queue if non-empty, else its
        in-batch keys)."""
        c, length = self.num_classes, self.queue_length
        fill = state['queue_fill'].cpu()
        inbatch_start = torch.cumsum(inbatch_len, 0) - inbatch_len
        pieces = []
        for k in range(c):
            if int(fill[k]) > 0:
                pieces.append(torch.arange(k * length,
                                           k * length + int(fill[k])))
            else:
                start = c * length + int(inbatch_start[k])
                pieces.append(torch.arange(start,
                                           start + int(inbatch_len[k])))
        return [
            torch.cat([pieces[k] for k in range(c) if k != cls])
            for cls in range(c)
        ]

    def contrast(self, side: str, queries: Sequence[Samples],
                 keys: Sequence[Samples],
                 generator: torch.Generator) -> Dict[str, Tensor]:
        """Category-wise InfoNCE of ``queries`` against the prototypes and
        queued keys of ``side``, then enqueue this batch's keys.

        Returns the loss (this process's share, see module doc), per-class
        ℓ_c (global), the class mask, the weights and similarity stats.
        """
        c = self.num_classes
        state = self.queue_state(side)
        device = state['queue'].device
        dim = state['queue'].shape[-1]
        q_index = _GlobalIndex(queries, c)
        k_index = _GlobalIndex(keys, c)

        with torch.no_grad():
            # prototypes from all-reduced per-class key sums
            key_sum = torch.zeros(c, dim, device=device)
            for k in keys:
                key_sum.index_add_(0, k.labels, k.rows.float())
            all_reduce(key_sum)
            k_total = k_index.total.to(device)
            in_batch = k_total > 0
            batch_proto = F.normalize(key_sum, dim=1)
            protos, valid = state['prototypes'], state['prototype_valid']
            m = self.prototype_momentum
            if m is None:
                protos[in_batch] = batch_proto[in_batch]
                usable = in_batch.clone()
            else:
                again = in_batch & valid
                protos[again] = F.normalize(
                    m * protos[again] + (1 - m) * batch_proto[again], dim=1)
                protos[in_batch & ~valid] = batch_proto[in_batch & ~valid]
                usable = valid | in_batch
            valid |= in_batch

            # keys to enqueue (also the in-batch negatives): drawn from the
            # global key list; each process fills the rows it holds and a
            # sum over processes completes them (= an all-gather of the
            # drawn keys, without gathering every key)
            inbatch_len = torch.zeros(c, dtype=torch.long)
            draws = []
            for cls in range(c):
                n = int(k_index.total[cls])
                if n == 0:
                    draws.append(None)
                    continue
                idx = torch.randperm(n, generator=generator)
                idx = idx[:self.enqueue_per_class]
                draws.append(idx)
                inbatch_len[cls] = idx.numel()
            inbatch = torch.zeros(int(inbatch_len.sum()), dim, device=device)
            start = 0
            for cls, idx in enumerate(draws):
                if idx is None:
                    continue
                rows, where = k_index.select(cls, idx)
                inbatch[start + where.to(device)] = rows.float()
                start += idx.numel()
            all_reduce(inbatch)

            pools = self._negative_pools(state, inbatch_len)
            bank = torch.cat([state['queue'].reshape(-1, dim), inbatch])
            q_total = q_index.total
            # a class counts if it has queries, a prototype and negatives
            present = torch.tensor(
                [
                    int(q_total[cls]) > 0 and bool(usable[cls])
                    and pools[cls].numel() > 0 for cls in range(c)
                ],
                device=device)
            weights = class_weights_from_performance(
                self.perf_estimate, present, self.reweight_gamma) \
                if self.reweight else torch.ones(c, device=device)
            self.class_weights.copy_(weights)

        # queries and negatives, global draw; keep the local queries
        per_class_count = torch.zeros(c, dtype=torch.long)
        q_rows, q_labels, neg_index = [], [], []
        for cls in range(c):
            if not bool(present[cls]):
                continue
            m_c = self.num_queries
            if self.reweight_sampling:
                m_c = max(1, int(round(self.num_queries *
                                       float(weights[cls]))))
            n = int(q_total[cls])
            idx = torch.randperm(n, generator=generator)[:m_c] if n >= m_c \
                else torch.randint(n, (m_c, ), generator=generator)
            pool = pools[cls]
            neg = pool[torch.randint(
                pool.numel(), (m_c, self.num_negatives),
                generator=generator)]
            per_class_count[cls] = m_c
            rows, where = q_index.select(cls, idx)
            q_rows.append(rows)
            q_labels.append(torch.full((rows.shape[0], ), cls,
                                       dtype=torch.long, device=device))
            neg_index.append(neg[where.cpu()])
        q_dim = queries[0].rows.shape[1] if queries else dim
        q_rows = torch.cat(q_rows) if q_rows else \
            torch.zeros(0, q_dim, device=device)
        q_labels = torch.cat(q_labels) if q_labels else \
            torch.zeros(0, dtype=torch.long, device=device)
        neg_index = torch.cat(neg_index).to(device) if neg_index else \
            torch.zeros(0, self.num_negatives, dtype=torch.long,
                        device=device)
        out = self.loss_fn(
            q_rows,
            q_labels,
            protos.clone(),
            bank,
            negative_index=neg_index,
            class_weights=weights,
            class_query_counts=per_class_count.to(device),
            num_present=int(present.sum()))
        # keep every query map in the graph (zero gradient), so a process
        # without sampled queries still gives DDP a gradient
        loss = out.loss + sum(0.0 * s.rows.sum() for s in queries)

        with torch.no_grad():
            for cls, idx in enumerate(draws):
                if idx is not None:
                    start = int((torch.cumsum(inbatch_len, 0) -
                                 inbatch_len)[cls])
                    self.enqueue(state['queue'], state['queue_ptr'],
                                 state['queue_fill'], cls,
                                 inbatch[start:start + idx.numel()])
            stats = torch.cat([
                out.per_class_loss,
                torch.stack([
                    out.pos_sim.sum(),
                    out.neg_sim.sum(),
                    torch.tensor(float(out.pos_sim.numel()), device=device),
                    out.loss.detach().float()
                ])
            ])
            all_reduce(stats)
        return dict(
            loss=loss,
            per_class_loss=stats[:c],
            global_loss=stats[-1],
            present=present,
            weights=weights,
            pos_sim=stats[c] / stats[c + 2].clamp(min=1),
            neg_sim=stats[c + 1] / stats[c + 2].clamp(min=1),
            queue_fill=state['queue_fill'].float().mean() /
            self.queue_length)

    # ------------------------------------------------------------ loss
    def _check_context(self, ctx: UDAContext) -> None:
        if ctx.num_classes != self.num_classes:
            raise ValueError(
                f'T2S: num_classes={self.num_classes} but the decode head '
                f'has {ctx.num_classes} classes.')
        if ctx.teacher is None:
            raise RuntimeError('T2S needs the EMA teacher (UDASegmentor '
                               'builds it for requires_teacher methods).')
        needs_target = not self.dg_mode
        if needs_target and 'target' not in ctx.inputs:
            raise ValueError(
                'T2S: the batch has no target images; for domain '
                'generalisation (source only) set dg_mode=True.')

    def _pseudo_samples(self, ctx: UDAContext, emb: Tensor) -> Samples:
        """Target pixels with teacher confidence ≥ threshold, labelled with
        the teacher's pseudo-label, on the grid of ``emb``."""
        with torch.no_grad():
            logits = ctx.teacher_outputs('target').logits.float()
            if logits.shape[-2:] != emb.shape[-2:]:
                logits = resize(logits, size=emb.shape[-2:], mode='bilinear',
                                align_corners=ctx.student.align_corners)
            conf, label = F.softmax(logits, 1).max(1)
            label[conf < self.pseudo_threshold] = ctx.ignore_index
        return self._samples(emb, label, ctx.ignore_index)

    def loss(self, ctx: UDAContext) -> Dict[str, Tensor]:
        """L_T2S of one iteration (see docs/t2s.md) and its
        logged statistics; updates the EMA head, r_c, the prototypes and
        the queues."""
        self._check_context(ctx)
        iteration = int(ctx.iter)
        self.update_projection_ema(iteration)
        generator = self.generator(iteration)
        ignore = ctx.ignore_index
        stylised = self.stylise_source(ctx, generator)
        ctx.add_debug_image('stylised_source', stylised)

        uses_stylised = self.target_side in ('stylised', 'both')
        want_student_styl = self.stylised_ce_weight > 0 or (
            uses_stylised and self.direction in ('t2s', 'both')) or (
                uses_stylised and self.key_model == 'student_sg'
                and self.direction in ('s2t', 'both'))
        student_styl = ctx.forward_student(stylised, with_feat=True) \
            if want_student_styl else None
        teacher_styl = None
        if uses_stylised and self.direction in ('s2t', 'both') and \
                self.key_model == 'teacher':
            teacher_styl = ctx.forward_teacher(stylised, with_feat=True)
        if self.perf_metric == 'stylised_iou' and student_styl is None \
                and teacher_styl is None:
            teacher_styl = ctx.forward_teacher(stylised, with_feat=True)

        losses: Dict[str, Tensor] = {}
        results = {}
        if self.direction in ('t2s', 'both'):
            queries = []
            if uses_stylised:
                emb = self.proj_head(student_styl.feat)
                queries.append(
                    self._samples(emb, self._labels_on(ctx, emb.shape[-2:]),
                                  ignore))
            if self.target_side in ('target_pseudo', 'both'):
                emb = self.proj_head(ctx.student_outputs('target').feat)
                queries.append(self._pseudo_samples(ctx, emb))
            key_feat = ctx.teacher_outputs('source').feat \
                if self.key_model == 'teacher' \
                else ctx.student_outputs('source').feat
            key_emb = self._key_embedding(key_feat)
            keys = [
                self._samples(key_emb,
                              self._labels_on(ctx, key_emb.shape[-2:]),
                              ignore)
            ]
            results['t2s'] = (queries, keys)
        if self.direction in ('s2t', 'both'):
            emb = self.proj_head(ctx.student_outputs('source').feat)
            queries = [
                self._samples(emb, self._labels_on(ctx, emb.shape[-2:]),
                              ignore)
            ]
            keys = []
            if uses_stylised:
                styl_feat = teacher_styl.feat if self.key_model == 'teacher' \
                    else student_styl.feat
                key_emb = self._key_embedding(styl_feat)
                keys.append(
                    self._samples(key_emb,
                                  self._labels_on(ctx, key_emb.shape[-2:]),
                                  ignore))
            if self.target_side in ('target_pseudo', 'both'):
                tgt_feat = ctx.teacher_outputs('target').feat \
                    if self.key_model == 'teacher' \
                    else ctx.student_outputs('target').feat
                keys.append(
                    self._pseudo_samples(ctx,
                                         self._key_embedding(tgt_feat)))
            results['s2t'] = (queries, keys)

        # r_c before the weights of this iteration
        styl_logits = None
        if self.perf_metric == 'stylised_iou':
            styl_logits = (student_styl if student_styl is not None else
                           teacher_styl).logits.detach()
        self.update_performance(
            *self._performance_statistics(ctx, styl_logits))

        outs = {
            d: self.contrast(KEY_SIDE[d], q, k, generator)
            for d, (q, k) in results.items()
        }
        world = get_world_size()
        total = sum(o['loss'] for o in outs.values()) / len(outs)
        if world > 1:
            # gradient: world_size × this process's share (DDP averages);
            # value: the global loss, the same on every process
            global_value = sum(o['global_loss'] for o in outs.values()) / \
                len(outs)
            total = world * total - (world * total).detach() + global_value
        losses['loss_t2s'] = total

        present_by_dir = torch.stack([o['present'] for o in outs.values()])
        present = present_by_dir.any(0)
        # ℓ_c averaged over the directions in which c was present
        per_class = (torch.stack([
            o['per_class_loss'] for o in outs.values()
        ]) * present_by_dir).sum(0) / present_by_dir.sum(0).clamp(min=1)
        weights = next(iter(outs.values()))['weights']
        if self.log_per_class:
            for cls in torch.nonzero(present).flatten().tolist():
                name = self.class_names[cls]
                losses[f'contrast.{name}'] = per_class[cls]
                losses[f'w.{name}'] = weights[cls]
        if len(outs) > 1:
            for d, o in outs.items():
                losses[f'contrast_{d}'] = o['global_loss'].detach()
        device = total.device
        losses['present_classes'] = present.sum().float()
        losses['queue_fill'] = torch.stack(
            [o['queue_fill'] for o in outs.values()]).mean()
        losses['pos_sim'] = torch.stack([o['pos_sim']
                                         for o in outs.values()]).mean()
        losses['neg_sim'] = torch.stack([o['neg_sim']
                                         for o in outs.values()]).mean()
        losses['perf_mean'] = self.perf_estimate[present].mean() \
            if bool(present.any()) else torch.zeros((), device=device)

        if self.stylised_ce_weight > 0:
            ce = ctx.student.decode_head.loss_by_feat(
                student_styl.logits, ctx.data_samples['source'])
            losses['loss_ce_stylised'] = self.stylised_ce_weight * \
                ce['loss_ce']
            losses['acc_stylised'] = ce['acc_seg']
        return losses
