"""PLCA: Pixel-Level Cycle Association (Kang, Wei, Yang, Zhuang, Hauptmann;
NeurIPS 2020), following the official code
``kgl-prml/Pixel-Level-Cycle-Association`` @ e01d77a0; see docs/plca.md."""
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from mmseg.models.utils import resize
from torch import Tensor

from mmseg_uda.registry import MODELS
# The loss modules register CycleAssociationLoss, DistributedLovaszSoftmaxLoss
# and UniformCrossEntropyRegularizer, which PLCA builds by name.
from ..losses import distributed_lovasz_loss  # noqa: F401
from ..losses import uniform_cross_entropy_regularizer  # noqa: F401
from ..losses.cycle_association_loss import spatial_aggregation
from .base import BaseUDAMethod
from .context import UDAContext

# 0.75 (LOV_W) × 2 GPUs × ITER_SIZE 2 of the released configs, see PLCA.
RELEASED_LOVASZ_WEIGHT = 3.0


@MODELS.register_module()
class PLCA(BaseUDAMethod):
    """Pixel-level cycle association (``solver/solver.py::Solver.
    association``):

    L = L_ce + w_lov·L_lov + λ_feat·L_ass^feat + λ_cls·L_ass^cls
        + λ_lsr·(L_lsr^s + L_lsr^t)

    - L_ce: the student decode head's own source loss (``src.loss_ce`` of
      ``UDASegmentor``; use ``avg_non_ignore=True`` as nn.CrossEntropyLoss).
    - L_ass^feat: :class:`CycleAssociationLoss` (cosine) on the decode
      head's input feature (layer4 for ``DLV2Head``) of source image n and
      target image n; L_ass^cls: the same with −KL on the softmax of the
      stride-8 logits. Source labels are nearest-downsampled to the
      feature grid. Logged with ``valid_ratio_feat``/``valid_ratio_cls``,
      the fraction of labelled source pixels whose cycle is consistent.
    - L_lsr: :class:`UniformCrossEntropyRegularizer` (T = 10) on the
      stride-8 source and target logits (``solver/utils.py::LSR``).
    - L_lov: Lovász-Softmax of the source logits upsampled to the label
      size, over the pixels of all processes
      (:class:`DistributedLovaszSoftmaxLoss`).

    ``lovasz_weight`` (default 3.0). The official solver adds
    ``LOV_W · world_size · ITER_SIZE · L_lov`` with LOV_W = 0.75 and
    L_lov the multi-GPU Lovász, whose per-rank share is multiplied by
    ``num_gpus`` once more so that DDP's gradient average yields the
    gradient of the Lovász loss of the whole multi-GPU micro-batch; the
    micro-batch losses are divided by ITER_SIZE and accumulated. Net
    effect: the source gradient is CE + 0.75 · world_size · ITER_SIZE ·
    Lovász, i.e. 0.75 × 2 × 2 = 3.0 in the released 2-GPU, ITER_SIZE = 2
    setting. Here the Lovász term is already the
    global-batch loss with DDP-correct gradients and mmengine's
    ``accumulative_counts`` divides by the number of micro-batches like
    ITER_SIZE, so ``lovasz_weight = 3.0`` reproduces the released relative
    weight; 0.75 is the nominal LOV_W (what one GPU without accumulation
    would use). The Lovász batch is the micro-batch of all processes
    (2 per GPU × 2 GPUs = 4 images in the release).

    Test time (``test_aggregation``, ``tools/test.py``): feature
    aggregation f̂ = ½f + ½Agg_cos(f) → classifier → p = softmax →
    p̂ = ½p + ½Agg_KL(p), returned as the segmentation map (probabilities,
    resized by the head like logits).

    BatchNorm: the official code forwards target and source separately;
    configure ``UDASegmentor(bn_mode='separate')``.

    Args:
        feat_association (dict): feature-level ``CycleAssociationLoss``
            config (``metric='cos'``); ``loss_weight`` comes from
            ``lambda_feat``.
        cls_association (dict): classifier-level config (``metric='kl'``).
        lambda_feat (float): λ of the feature level (``ASSO_W`` = 0.1); 0
            skips the level.
        lambda_cls (float): λ of the classifier level (0.1); 0 skips it.
        lsr (dict): ``UniformCrossEntropyRegularizer`` config.
        lambda_lsr (float): weight of each LSR term (``LSR_W`` = 0.01).
        lovasz (dict): ``DistributedLovaszSoftmaxLoss`` config.
        lovasz_weight (float): effective Lovász weight relative to the CE
            (see above); 0 disables the term.
        downsample_factor (float): bilinear down-scaling of features and
            logits before the association (``TRAIN.USE_DOWNSAMPLING`` with
            ``SCALE_FACTOR``; 1.0 = off, as released).
        test_aggregation (bool): PLCA's test-time aggregation
            (``TEST.WITH_AGGREGATION`` = True).
        test_alpha (float): α of the test-time aggregation (0.5).
        test_chunk_size (int | None): rows per block of the test-time
            aggregation (None: full matrices, ~1.1 GB each at 730×1460).
    """
    student_domains = ('source', 'target')
    needs_feat = True

    def __init__(self,
                 feat_association: dict = dict(
                     type='CycleAssociationLoss',
                     metric='cos',
                     alpha=0.5,
                     chunk_size=1024,
                     reduction='global_mean',
                     loss_name='loss_ass_feat'),
                 cls_association: dict = dict(
                     type='CycleAssociationLoss',
                     metric='kl',
                     alpha=0.5,
                     chunk_size=1024,
                     reduction='global_mean',
                     loss_name='loss_ass_cls'),
                 lambda_feat: float = 0.1,
                 lambda_cls: float = 0.1,
                 lsr: dict = dict(
                     type='UniformCrossEntropyRegularizer', threshold=10.0),
                 lambda_lsr: float = 0.01,
                 lovasz: dict = dict(
                     type='DistributedLovaszSoftmaxLoss', classes='present'),
                 lovasz_weight: float = RELEASED_LOVASZ_WEIGHT,
                 downsample_factor: float = 1.0,
                 test_aggregation: bool = True,
                 test_alpha: float = 0.5,
                 test_chunk_size: Optional[int] = 1024,
                 loss_prefix: Optional[str] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(loss_prefix=loss_prefix, init_cfg=init_cfg)
        if not 0 < downsample_factor <= 1:
            raise ValueError('downsample_factor must be in (0, 1], got '
                             f'{downsample_factor}')
        for name, weight in (('lambda_feat', lambda_feat),
                             ('lambda_cls', lambda_cls),
                             ('lambda_lsr', lambda_lsr),
                             ('lovasz_weight', lovasz_weight)):
            if weight < 0:
                raise ValueError(f'{name} must be >= 0, got {weight}')
        self.feat_association = self._build_loss(
            'feat_association', feat_association, lambda_feat)
        self.cls_association = self._build_loss(
            'cls_association', cls_association, lambda_cls)
        if self.feat_association.metric != 'cos' or \
                self.cls_association.metric != 'kl':
            raise ValueError(
                "PLCA: feat_association must use metric='cos' and "
                "cls_association metric='kl' (got "
                f'{self.feat_association.metric!r}, '
                f'{self.cls_association.metric!r})')
        self.lsr = self._build_loss('lsr', lsr, lambda_lsr)
        self.lovasz = self._build_loss('lovasz', lovasz, lovasz_weight)
        self.lambda_feat = lambda_feat
        self.lambda_cls = lambda_cls
        self.lambda_lsr = lambda_lsr
        self.lovasz_weight = lovasz_weight
        self.downsample_factor = downsample_factor
        self.test_aggregation = test_aggregation
        self.test_alpha = test_alpha
        self.test_chunk_size = test_chunk_size

    @staticmethod
    def _build_loss(name: str, cfg: dict, weight: float):
        if 'loss_weight' in cfg:
            raise ValueError(
                f'PLCA.{name}: set the weight with the PLCA argument '
                '(lambda_feat / lambda_cls / lambda_lsr / lovasz_weight), not '
                'with loss_weight inside the loss config.')
        return MODELS.build(dict(cfg, loss_weight=weight))

    # -------------------------------------------------------------- training
    def _resized(self, x: Tensor) -> Tensor:
        if self.downsample_factor == 1.0:
            return x
        return F.interpolate(
            x,
            scale_factor=self.downsample_factor,
            mode='bilinear',
            align_corners=False,
            recompute_scale_factor=False)

    @staticmethod
    def _label_at(label: Tensor, size) -> Tensor:
        """Source labels nearest-downsampled to a feature grid (the
        official ``F.interpolate(..., mode='nearest')``)."""
        return F.interpolate(
            label[:, None].float(), size=tuple(size),
            mode='nearest')[:, 0].long()

    def _association(self, loss_module, src: Tensor, tgt: Tensor,
                     label: Tensor, level: str, ctx: UDAContext,
                     losses: Dict[str, Tensor]) -> None:
        if src.shape[0] != tgt.shape[0]:
            raise ValueError(
                f'PLCA pairs source image n with target image n, but the '
                f'batches hold {src.shape[0]} source and {tgt.shape[0]} '
                'target images.')
        label = self._label_at(label, src.shape[-2:])
        loss, stats = loss_module.loss_and_stats(src, tgt, label)
        losses[loss_module.loss_name] = loss
        losses[f'valid_ratio_{level}'] = stats['valid_ratio']
        if ctx.debug:
            assoc = loss_module.associate(src.detach(), tgt.detach(), label)
            cycle = torch.full_like(label, 255).flatten(1)
            cycle[assoc.pair, assoc.start] = assoc.valid.long()
            ctx.add_debug_map(f'plca_cycle_consistent_{level}',
                              cycle.view_as(label))

    def loss(self, ctx: UDAContext) -> Dict[str, Tensor]:
        src = ctx.student_outputs('source')
        tgt = ctx.student_outputs('target')
        label = ctx.src_label
        losses: Dict[str, Tensor] = {}
        if self.lambda_feat > 0:
            if src.feat is None or tgt.feat is None:
                raise RuntimeError(
                    'PLCA needs the decode head feature (needs_feat=True) but '
                    'the student outputs carry none.')
            self._association(self.feat_association,
                              self._resized(src.feat),
                              self._resized(tgt.feat), label, 'feat', ctx,
                              losses)
        if self.lambda_cls > 0:
            self._association(
                self.cls_association,
                F.softmax(self._resized(src.logits.float()), dim=1),
                F.softmax(self._resized(tgt.logits.float()), dim=1), label,
                'cls', ctx, losses)
        if self.lambda_lsr > 0:
            losses[self.lsr.loss_name] = self.lsr(src.logits) + \
                self.lsr(tgt.logits)
        if self.lovasz_weight > 0:
            logits = resize(
                src.logits,
                size=label.shape[-2:],
                mode='bilinear',
                align_corners=ctx.student.align_corners)
            losses[self.lovasz.loss_name] = self.lovasz(logits, label)
        return losses

    # ------------------------------------------------------------ inference
    def test_encode_decode(self, model, inputs: Tensor,
                           batch_img_metas: List[dict]) -> Optional[Tensor]:
        """``tools/test.py`` with ``TEST.WITH_AGGREGATION``: aggregate the
        decode head's input feature, classify, aggregate the class
        probabilities; resized to the input like ``encode_decode``."""
        if not self.test_aggregation:
            return None
        head = model.decode_head
        if not (hasattr(head, '_forward_feature')
                and hasattr(head, 'cls_seg')):
            raise TypeError(
                f'PLCA test-time aggregation needs a decode head with '
                f'_forward_feature and cls_seg; {type(head).__name__} has '
                'not both. Set test_aggregation=False.')
        feat = head._forward_feature(model.extract_feat(inputs))
        feat = spatial_aggregation(feat, 'cos', self.test_alpha,
                                   self.test_chunk_size)
        prob = F.softmax(head.cls_seg(feat).float(), dim=1)
        prob = spatial_aggregation(prob, 'kl', self.test_alpha,
                                   self.test_chunk_size)
        return head.predict_by_feat(prob, batch_img_metas)
