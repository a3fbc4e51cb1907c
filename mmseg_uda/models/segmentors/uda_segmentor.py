"""``UDASegmentor``: any mmseg segmentor as the student, plus a list of
domain-adaptation methods, trained with one optimizer step per iteration."""
import copy
import fnmatch
import random
from contextlib import ExitStack, contextmanager
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as torch_dist
from mmengine.dist import is_distributed
from mmengine.logging import MessageHub
from mmengine.model import ModuleList
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.utils import is_list_of
from mmseg.models.segmentors.base import BaseSegmentor
from mmseg.models.utils import resize
from mmseg.utils import add_prefix
from torch import Tensor, nn

from mmseg_uda.registry import MODELS
from ..data_preprocessor import check_target_unlabelled
from ..uda.base import BaseUDAMethod
from ..uda.context import DOMAINS, UDAContext
from ..utils.normalization import to_rgb_uint8
from ..utils.peft_adapters import (adapters_unwrapped, apply_backbone_tuning,
                                   set_frozen_train_mode)
from ..utils.global_batch import global_indices
from ..utils.seg_forward import segmentor_forward, segmentor_loss
from ..uda.vfm_uda_transforms import (VFM_UDA_WEAK_JITTER,
                                      check_weak_jitter_cfg,
                                      vfm_uda_weak_jitter)

#: Stream tag of the source jitter's per-image draws (distinct from the
#: methods' streams, which use other seed-sequence lengths/tags).
_SOURCE_JITTER_STREAM = 0x5A17


def registered_uda_methods() -> List[str]:
    """Names of the UDA methods in mmseg's MODELS registry."""
    return sorted(
        name for name, cls in MODELS.module_dict.items()
        if isinstance(cls, type) and issubclass(cls, BaseUDAMethod))


#: Local names of the buffers that hold a run's random seeds (this
#: segmentor's ``rng_base_seed``, ``SelfTraining.rng_seed``). A resume keeps
#: the checkpoint's values; a ``load_from`` (fine-tuning) run keeps its own.
SEED_BUFFER_NAMES = ('rng_base_seed', 'rng_seed')


def iteration_seed(base_seed: int, iteration: int, rank: int) -> int:
    """The 64-bit seed of the global RNGs at one iteration on one process.

    ``numpy.random.SeedSequence(base_seed, spawn_key=(iteration, rank))``:
    NumPy's documented way to derive independent streams from one seed, so
    distinct (iteration, rank) pairs of one run, and runs with distinct base
    seeds, get unrelated seeds (a linear mix such as
    ``base·p + iteration·q + rank·r`` repeats whenever the differences
    cancel). A pure function of its arguments, so a resumed run repeats it.
    """
    for name, value in (('base_seed', base_seed), ('iteration', iteration),
                        ('rank', rank)):
        if not 0 <= int(value) < 2**32:
            raise ValueError(f'{name} must be in [0, 2**32), got {value}')
    words = np.random.SeedSequence(
        int(base_seed), spawn_key=(int(iteration), int(rank))).generate_state(
            2, dtype=np.uint32)
    return int(words[0]) | (int(words[1]) << 32)


def shared_iteration_seed(base_seed: int, iteration: int) -> int:
    """A 32-bit seed of one iteration that is the same on every process
    (``SeedSequence(base_seed, spawn_key=(iteration,))``, a stream distinct
    from every :func:`iteration_seed`): for draws that must be one per global
    batch, such as HRDA's detail box."""
    return int(np.random.SeedSequence(
        int(base_seed), spawn_key=(int(iteration), )).generate_state(
            1, dtype=np.uint32)[0])


def seed_global_rngs(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), numpy's global RNG and
    python's ``random`` with one 64-bit seed."""
    torch.manual_seed(seed)
    np.random.seed([seed & 0xFFFFFFFF, seed >> 32])
    random.seed(seed)


def _is_dropout_like(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.dropout._DropoutNd) or \
        type(module).__name__ == 'DropPath'


@MODELS.register_module()
class UDASegmentor(BaseSegmentor):
    """Unsupervised domain adaptation around an mmseg segmentor.

    Design (README "Design"): the two-domain batch of
    ``UDADataset`` is normalised by ``UDADataPreProcessor``; the student (any
    ``EncoderDecoder`` config) is forwarded once per domain; each method in
    ``methods`` receives a :class:`UDAContext` and returns named losses; the
    source cross-entropy of the student's own decode (and auxiliary) head is
    always included (``methods=[]`` is the source-only baseline). One
    backward and one optimizer step per iteration; methods with
    discriminators get a second optimizer (``OptimWrapperDict`` key
    ``discriminator``) stepped in the same iteration.

    Args:
        segmentor (dict): config of the student segmentor
            (e.g. ``{{_base_.model}}`` of an mmseg model config).
        methods (list[dict]): UDA method configs (see
            :func:`registered_uda_methods`); empty = source only.
        bn_mode (str): ``'joint'`` forwards the source and target batches
            through the student together (BatchNorm statistics over both
            domains), ``'separate'`` one after the other, target first as in
            PLCA's official code (kgl-prml/Pixel-Level-Cycle-Association
            @ e01d77a0, ``solver/solver.py``).
        teacher_mode (str): how the EMA teacher runs during training:
            ``'dropout_off'`` keeps the teacher in train mode but switches
            Dropout/DropPath off (DAFormer), ``'eval'`` runs it in eval mode.
        train_cfg (dict): ``check_finite`` (default True) stops training
            with the iteration and loss name when a loss is NaN/inf, before
            any backward or optimizer step, and restores what the forward
            changed in place (it copies the buffers and the frozen
            non-teacher parameters each iteration for that);
            ``reseed_per_iter`` (default True) seeds torch/numpy/random at
            the start of every iteration from (base seed, iteration, rank)
            (:func:`iteration_seed`): mmengine does not checkpoint RNG
            states, so this is what makes dropout, DropPath and anything a
            method draws from the global RNGs resume exactly. The base seed
            (buffer ``rng_base_seed``) is ``torch.initial_seed()`` at
            construction, i.e. the Runner's ``randomness.seed``; a resume
            keeps the checkpoint's, a ``load_from`` run its own.
        test_cfg (dict): ``predict_with`` ``'student'`` (default) or
            ``'teacher'``; ``method_inference`` (default True) lets a method
            replace ``encode_decode`` at test time (PLCA aggregation).
        data_preprocessor (dict, optional): defaults to a
            ``UDADataPreProcessor`` with the student's normalisation; a
            ``SegDataPreProcessor`` config (what mmseg configs define and
            the Runner injects) becomes a ``UDADataPreProcessor`` with the
            same arguments.
        source_color_jitter (None | str | dict): VFM-UDA's weak colour
            jitter of the source batch before the student's source forward
            (Englert et al., CVPRW 2024; tue-mps/vfm-uda@e154d8f
            ``train_dataprep``: ``random_aug_weak``, torchvision
            ``ColorJitter(32/255, 0.5, 0.5, 18/360)`` applied per image with
            p 0.9): ``'vfm_uda'`` or a dict with those keys. Only the
            student's source forward sees it; methods keep the un-jittered
            source (VFM-UDA's ClassMix pastes the original source). Draws
            per image on the global-batch numbering (2 processes = 1).
            None (default): no jitter.
        freeze_backbone (bool): freeze the student's (and teacher's)
            backbone: no gradient, no optimizer state, eval mode (fixed
            BatchNorm statistics, no dropout/DropPath), skipped by the EMA
            teacher; the neck and heads train
            (:mod:`mmseg_uda.models.utils.peft_adapters`).
        backbone_adapter (dict, optional): a parameter-efficient adapter in
            the frozen backbone, e.g. ``dict(type='LoRA', rank=16, alpha=16,
            dropout=0.0, target_modules=['q_proj', 'v_proj'])`` (Hu et al.,
            ICLR 2022; injected with Hugging Face peft). Needs
            ``freeze_backbone=True``.
    """

    def __init__(self,
                 segmentor: dict,
                 methods: Sequence[dict] = (),
                 bn_mode: str = 'joint',
                 teacher_mode: str = 'dropout_off',
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 freeze_backbone: bool = False,
                 backbone_adapter: Optional[dict] = None,
                 source_color_jitter: Union[None, str, dict] = None):
        if data_preprocessor is None:
            data_preprocessor = segmentor.get('data_preprocessor') or {}
        # mmseg configs define a top-level SegDataPreProcessor that the
        # Runner injects into the model config: use its two-domain version.
        data_preprocessor = dict(data_preprocessor)
        if data_preprocessor.get('type', 'SegDataPreProcessor') in (
                'SegDataPreProcessor', 'mmseg.SegDataPreProcessor'):
            data_preprocessor['type'] = 'UDADataPreProcessor'
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if bn_mode not in ('joint', 'separate'):
            raise ValueError(
                f"bn_mode must be 'joint' or 'separate', got {bn_mode!r}")
        if teacher_mode not in ('dropout_off', 'eval'):
            raise ValueError("teacher_mode must be 'dropout_off' or 'eval', "
                             f'got {teacher_mode!r}')
        self.bn_mode = bn_mode
        self.teacher_mode = teacher_mode
        if source_color_jitter == 'vfm_uda':
            source_color_jitter = dict(VFM_UDA_WEAK_JITTER)
        self.source_color_jitter = None if source_color_jitter is None \
            else check_weak_jitter_cfg(source_color_jitter,
                                       'UDASegmentor.source_color_jitter')
        self.train_cfg = dict(check_finite=True, reseed_per_iter=True)
        self.train_cfg.update(train_cfg or {})
        self.test_cfg = dict(
            predict_with='student', method_inference=True,
            **(test_cfg or {}))
        if self.test_cfg['predict_with'] not in ('student', 'teacher'):
            raise ValueError("test_cfg.predict_with must be 'student' or "
                             f"'teacher', got {self.test_cfg['predict_with']}")

        self.student = MODELS.build(segmentor)
        if not hasattr(self.student, 'decode_head'):
            raise TypeError(
                'UDASegmentor needs a segmentor with a decode head (an mmseg '
                f'EncoderDecoder); got {type(self.student).__name__}.')
        self.freeze_backbone = bool(freeze_backbone)
        self.adapted_layers = apply_backbone_tuning(
            self.student, self.freeze_backbone, backbone_adapter)
        # mmengine's ModuleList, so init_weights reaches the methods'
        # sub-modules (discriminators, projection heads, ...).
        self.methods = ModuleList(
            self._build_method(i, cfg) for i, cfg in enumerate(methods))
        prefixes = [m.loss_prefix for m in self.methods if m.loss_prefix]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError(
                f'Two UDA methods share a loss_prefix ({prefixes}); give each '
                'a distinct `loss_prefix`.')
        if self.freeze_backbone and any(
                getattr(m, 'imnet_encoder', None) is not None
                for m in self.methods):
            raise ValueError(
                'freeze_backbone=True with SelfTraining feature distance: FD '
                'keeps a trained encoder near its pretrained features, a '
                'frozen one does not move (without an adapter FD is 0); set '
                'imnet_feature_dist_lambda=0.')

        self.teacher = None
        if any(m.requires_teacher for m in self.methods):
            self.teacher = MODELS.build(copy.deepcopy(segmentor))
            # the student's structure (adapter layers), so EMA pairs match
            apply_backbone_tuning(self.teacher, self.freeze_backbone,
                                  backbone_adapter)
            self.teacher.requires_grad_(False)
            # Set by EMATeacherHook when it copies the student; checkpointed,
            # so a resumed run never re-initialises its teacher.
            self.register_buffer('teacher_initialized',
                                 torch.tensor(0, dtype=torch.uint8))
        elif self.test_cfg['predict_with'] == 'teacher':
            raise ValueError(
                "test_cfg.predict_with='teacher' but no method builds a "
                'teacher (none has requires_teacher=True).')

        # Base of the per-iteration seeds; a buffer so a resumed run (and
        # every rank, via mmengine's initial broadcast) uses the same base.
        self.register_buffer(
            'rng_base_seed',
            torch.tensor(torch.initial_seed() % (2**31), dtype=torch.int64))
        # Multiplicative factors for loss keys (fnmatch patterns), set each
        # iteration by LossWeightScheduleHook.
        self.loss_scales: Dict[str, float] = {}
        # False: a pattern may match no loss key (see _apply_loss_scales).
        self.loss_scales_strict = True
        self._checked_loss_patterns: set = set()
        # Set by the debug-picture hook for the iterations it draws.
        self.debug_enabled = False
        self.debug_maps: Dict[str, Tensor] = {}
        self._discriminator_loss_keys: set = set()

    # ------------------------------------------------------------- building
    def _tuned_models(self) -> List[nn.Module]:
        return [m for m in (getattr(self, 'student', None),
                            getattr(self, 'teacher', None)) if m is not None]

    def init_weights(self):
        """mmengine init; an adapted backbone initialises (and loads its
        pretrained weights) as the plain backbone, so its own init cannot
        redraw the adapter (LoRA's B stays 0)."""
        with ExitStack() as stack:
            for model in self._tuned_models():
                stack.enter_context(adapters_unwrapped(model.backbone))
            super().init_weights()

    def train(self, mode: bool = True):
        """A frozen backbone stays in eval mode (only its adapter's dropout
        follows ``mode``)."""
        super().train(mode)
        if getattr(self, 'freeze_backbone', False):
            for model in self._tuned_models():
                set_frozen_train_mode(model.backbone, mode)
        return self

    @staticmethod
    def _build_method(index: int, cfg: dict) -> BaseUDAMethod:
        cfg = dict(cfg)
        method_type = cfg.get('type')
        cls = MODELS.get(method_type) if isinstance(method_type, str) \
            else method_type
        if cls is None:
            raise KeyError(
                f'methods[{index}]: unknown UDA method type {method_type!r}. '
                f'Registered UDA methods: {registered_uda_methods()}. Is the '
                "package imported (custom_imports=dict(imports=['mmseg_uda']))?")
        if not (isinstance(cls, type) and issubclass(cls, BaseUDAMethod)):
            raise TypeError(
                f'methods[{index}]: {method_type!r} is registered but is not '
                'a UDA method (a subclass of BaseUDAMethod). Registered UDA '
                f'methods: {registered_uda_methods()}.')
        return MODELS.build(cfg)

    @property
    def current_iter(self) -> int:
        """The runner's iteration (0-based), from mmengine's MessageHub."""
        it = MessageHub.get_current_instance().get_info('iter')
        return 0 if it is None else int(it)

    def discriminator_modules(self) -> List[nn.Module]:
        return [d for m in self.methods for d in m.discriminators()]

    def frozen_modules(self) -> List[nn.Module]:
        mods = [m for method in self.methods for m in method.frozen_modules()]
        if self.teacher is not None:
            mods.append(self.teacher)
        return mods

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Accept a plain segmentor checkpoint (keys ``backbone.*``,
        ``decode_head.*``) for the student (and teacher), so ``load_from`` a
        source-only mmseg model works."""
        student_keys = [k for k in state_dict
                        if k.startswith(prefix + 'student.')]
        plain = [k for k in state_dict if k.startswith(prefix) and
                 k[len(prefix):].split('.')[0] in ('backbone', 'neck',
                                                   'decode_head',
                                                   'auxiliary_head')]
        if plain and not student_keys:
            for k in plain:
                rest = k[len(prefix):]
                value = state_dict.pop(k)
                state_dict[prefix + 'student.' + rest] = value
                if self.teacher is not None:
                    state_dict[prefix + 'teacher.' + rest] = value.clone()
        self._remember_own_seeds(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _seed_buffers(self) -> Dict[str, Tensor]:
        return {name: buf for name, buf in self.named_buffers()
                if name.rsplit('.', 1)[-1] in SEED_BUFFER_NAMES}

    def _remember_own_seeds(self, state_dict: dict, prefix: str) -> None:
        """Keep this run's seed buffers (drawn from its cfg / ``randomness``)
        before a checkpoint overwrites them; :meth:`_settle_loaded_seeds`
        decides at the first training iteration which ones the run uses."""
        if getattr(self, '_own_seeds', None) is not None:
            return  # an earlier load already kept them
        seeds = self._seed_buffers()
        if any(prefix + name in state_dict for name in seeds):
            self._own_seeds = {
                name: buf.detach().clone() for name, buf in seeds.items()}

    def _settle_loaded_seeds(self) -> None:
        """After a checkpoint load, at the first training iteration: a
        resumed run keeps the checkpoint's seed buffers (its draws continue
        the interrupted run's), a run that starts at iteration 0 from loaded
        weights (``load_from``, fine-tuning) gets back its own, so it does
        not replay the old run's random draws. mmengine loads both through
        the same ``load_state_dict``; only a resumed run starts past
        iteration 0."""
        own = getattr(self, '_own_seeds', None)
        if own is None:
            return
        self._own_seeds = None
        if self.current_iter > 0:
            return
        buffers = self._seed_buffers()
        with torch.no_grad():
            for name, value in own.items():
                buffers[name].copy_(value)

    # ------------------------------------------------------------- training
    def _student_domains(self) -> List[str]:
        wanted = {'source'}
        for m in self.methods:
            wanted.update(m.student_domains)
        unknown = wanted - set(DOMAINS)
        if unknown:
            raise ValueError(f'Unknown domains {unknown}; use {DOMAINS}.')
        # PLCA's official code forwards the target first (BN order).
        order = ('target', 'source') if self.bn_mode == 'separate' \
            else DOMAINS
        return [d for d in order if d in wanted]

    def _needs_feat(self) -> bool:
        return any(m.needs_feat for m in self.methods)

    def _forward_student_domains(self, ctx: UDAContext,
                                 domains: List[str]) -> None:
        domains = [d for d in domains if d not in ctx._student]
        if not domains:
            return
        with_feat = self._needs_feat()
        if self.bn_mode == 'joint' and len(domains) > 1:
            imgs = [self._student_input(ctx, d) for d in domains]
            shapes = {tuple(i.shape[-2:]) for i in imgs}
            if len(shapes) != 1:
                raise ValueError(
                    f"bn_mode='joint' needs source and target crops of one "
                    f'size, got {dict(zip(domains, shapes))}. Use '
                    "bn_mode='separate' or crop both to the same size.")
            out = segmentor_forward(self.student, torch.cat(imgs), with_feat)
            for d, o in zip(domains,
                            out.split([i.shape[0] for i in imgs])):
                ctx._student[d] = o
        else:
            for d in domains:
                ctx._student[d] = segmentor_forward(
                    self.student, self._student_input(ctx, d), with_feat)

    def _student_input(self, ctx: UDAContext, domain: str) -> Tensor:
        """The batch the student's own forward of ``domain`` sees: the
        source with ``source_color_jitter`` (if set), else ``ctx.inputs``."""
        img = ctx.inputs[domain]
        if domain != 'source' or self.source_color_jitter is None:
            return img
        base = int(self.rng_base_seed)
        rngs = [
            np.random.RandomState(np.random.SeedSequence(
                [base, int(ctx.iter), int(g), _SOURCE_JITTER_STREAM]
            ).generate_state(1)[0])
            for g in global_indices(img.shape[0])  # i·world_size + rank
        ]
        return vfm_uda_weak_jitter(ctx, img, rngs, self.source_color_jitter)

    def _check_source_labels(self, ctx: UDAContext) -> None:
        labels = ctx.src_label
        num_classes, ignore = ctx.num_classes, ctx.ignore_index
        valid = labels != ignore
        if valid.any() and (labels[valid].max() >= num_classes
                            or labels[valid].min() < 0):
            for label, meta in zip(labels, ctx.img_metas('source')):
                bad = torch.unique(label[(label != ignore) & (
                    (label >= num_classes) | (label < 0))])
                if bad.numel():
                    raise ValueError(
                        f"Source label {meta.get('seg_map_path', '?')} "
                        f'contains class ids {bad.tolist()} but the model '
                        f'has num_classes={num_classes} (ignore_index='
                        f'{ignore}). Labels must be trainIds: run the '
                        'dataset converter (tools/dataset_converters/), or '
                        'fix decode_head.num_classes.')

    def loss(self, inputs: Dict[str, Tensor],
             data_samples: Dict[str, list]) -> Dict[str, Tensor]:
        """All losses of one iteration: source supervision of the student,
        then every method's losses, then discriminator losses (whose keys are
        remembered so ``train_step`` routes them to their optimizer)."""
        if not isinstance(inputs, dict) or 'source' not in inputs:
            raise TypeError(
                'UDASegmentor.loss expects a two-domain batch '
                "dict(source=..., target=...) from UDADataset through "
                'UDADataPreProcessor; got a single-domain batch. Check '
                "train_dataloader.dataset.type == 'UDADataset'.")
        if self.teacher is not None and not int(self.teacher_initialized):
            raise RuntimeError(
                'The EMA teacher was never initialised from the student: add '
                "dict(type='EMATeacherHook') to custom_hooks.")
        check_target_unlabelled(
            (data_samples or {}).get('target'), 'UDASegmentor.loss')
        ctx = UDAContext(self, inputs, data_samples, self.current_iter,
                         debug=self.debug_enabled)
        self._check_source_labels(ctx)
        self._forward_student_domains(ctx, self._student_domains())

        losses: Dict[str, Tensor] = {}
        src = ctx.student_outputs('source')
        # A segmentor with its own loss (HRDA: 0.9·fused + 0.1·detail) uses
        # it; otherwise the decode head's loss on the logits.
        src_losses = segmentor_loss(self.student, src, ctx.src_label)
        if src_losses is None:
            src_losses = self.student.decode_head.loss_by_feat(
                src.logits, data_samples['source'])
        losses.update(add_prefix(src_losses, 'src'))
        if self.student.with_auxiliary_head:
            aux = self.student._auxiliary_head_forward_train(
                list(src.backbone), data_samples['source'])
            losses.update(add_prefix(aux, 'src'))

        for method in self.methods:
            self._merge_losses(losses, method.loss(ctx), method)
        disc_keys = set()
        for method in self.methods:
            disc = method.discriminator_loss(ctx)
            disc_keys.update(self._merge_losses(losses, disc, method))
        self._discriminator_loss_keys = disc_keys
        self._apply_loss_scales(losses)
        if ctx.debug:
            self._collect_debug_maps(ctx)
        return losses

    @staticmethod
    def _merge_losses(losses: dict, new: dict,
                      method: BaseUDAMethod) -> List[str]:
        keys = []
        for key, value in new.items():
            full = f'{method.loss_prefix}.{key}' if method.loss_prefix \
                else key
            if full in losses:
                raise KeyError(
                    f'{type(method).__name__} returned {full!r}, which '
                    'another component already produced; set loss_prefix.')
            losses[full] = value
            keys.append(full)
        return keys

    def _apply_loss_scales(self, losses: dict) -> None:
        """Multiply the losses whose key matches a ``loss_scales`` pattern.

        A pattern must match a loss key the first time it is applied (the
        first iteration): every method of this package returns the same loss
        keys at every iteration (a warm-up is a factor of 0, not a missing
        key), so a pattern that matches nothing then is a mistake that would
        otherwise silently scale nothing. ``loss_scales_strict=False``
        (``LossWeightScheduleHook(strict=False)``) skips the check, for a
        custom method that adds a loss only from a later iteration."""
        checked = self._checked_loss_patterns
        strict = self.loss_scales_strict
        for pattern, factor in self.loss_scales.items():
            keys = [k for k in losses
                    if 'loss' in k and fnmatch.fnmatchcase(k, pattern)]
            if not keys and strict and pattern not in checked:
                raise ValueError(
                    f'Loss-weight schedule pattern {pattern!r} '
                    '(LossWeightScheduleHook.schedules) matches no loss key; '
                    'the loss keys of this model are '
                    f"{sorted(k for k in losses if 'loss' in k)}. Fix the "
                    "pattern (fnmatch syntax, e.g. 'cdga.*'), or set "
                    'strict=False in the hook if a method adds that loss '
                    'only from a later iteration.')
            checked.add(pattern)
            for key in keys:
                value = losses[key]
                losses[key] = [v * factor for v in value] \
                    if is_list_of(value, Tensor) else value * factor

    def _collect_debug_maps(self, ctx: UDAContext) -> None:
        maps = {}
        for domain in DOMAINS:
            if domain not in ctx.inputs:
                continue
            img = ctx.inputs[domain]
            maps[f'{domain}_image'] = to_rgb_uint8(img, self.data_preprocessor)
            if domain == 'source':
                maps['source_label'] = ctx.src_label
            if domain in ctx._student:
                logits = resize(
                    ctx._student[domain].logits.detach(),
                    size=img.shape[-2:],
                    mode='bilinear',
                    align_corners=self.student.align_corners)
                maps[f'{domain}_prediction'] = logits.argmax(1)
        maps.update(ctx.debug_maps)
        self.debug_maps = maps

    @contextmanager
    def teacher_forward_mode(self):
        """Run the teacher as DAFormer does: Dropout/DropPath off (or the
        whole teacher in eval mode), restoring the flags afterwards."""
        if self.teacher_mode == 'eval':
            modules = list(self.teacher.modules())
        else:
            modules = [m for m in self.teacher.modules()
                       if _is_dropout_like(m)]
        flags = [m.training for m in modules]
        for m in modules:
            m.training = False
        try:
            yield
        finally:
            for m, flag in zip(modules, flags):
                m.training = flag

    def _split_optim_wrappers(
        self, optim_wrapper: Union[OptimWrapper, OptimWrapperDict]
    ) -> Tuple[OptimWrapper, Optional[OptimWrapper]]:
        has_disc = bool(self.discriminator_modules())
        if isinstance(optim_wrapper, OptimWrapperDict):
            keys = set(optim_wrapper.keys())
            if 'segmentor' not in keys:
                raise KeyError(
                    "optim_wrapper has several optimizers but no 'segmentor' "
                    f'entry (got {sorted(keys)}).')
            if has_disc and 'discriminator' not in keys:
                raise KeyError(
                    'A UDA method has discriminators but optim_wrapper has no '
                    "'discriminator' entry.")
            disc = optim_wrapper['discriminator'] if has_disc else None
            return optim_wrapper['segmentor'], disc
        if has_disc:
            names = [type(m).__name__ for m in self.methods
                     if m.discriminators()]
            raise TypeError(
                f'{names} train discriminators with their own optimizer: use '
                "optim_wrapper=dict(constructor='UDAOptimWrapperConstructor', "
                'segmentor=dict(...), discriminator=dict(...)).')
        return optim_wrapper, None

    def _forward_state(self) -> dict:
        """Copies of what this iteration's forward may change in place, so
        a non-finite loss can undo it: every buffer (BN statistics, the
        teacher's too, method queues and estimates) and the frozen
        parameters the previous forward changed (all of them at the first
        step of a process). That covers T2S's EMA projection head (changed
        every step) without copying, every step, SelfTraining's frozen
        ImageNet encoder (filled once, at the first step); the teacher's
        parameters only change in ``EMATeacherHook``, after the step. The
        version counters of the other frozen parameters detect an in-place
        change that was not copied (reported, see :meth:`_check_finite`)."""
        teacher = set() if self.teacher is None else {
            id(p) for p in self.teacher.parameters()}
        frozen = {name: p for name, p in self.named_parameters()
                  if not p.requires_grad and id(p) not in teacher}
        last = getattr(self, '_frozen_changed_last_step', None)
        copied = {name for name in frozen if last is None or name in last}
        tensors = list(self.buffers()) + [frozen[n] for n in copied]
        return dict(
            copies=[(t, t.detach().clone()) for t in tensors],
            frozen=frozen, copied=copied,
            versions={name: p._version for name, p in frozen.items()})

    def _note_frozen_changes(self, forward_state: Optional[dict]) -> None:
        """Remember which frozen parameters the forward changed in place."""
        if forward_state is not None:
            versions = forward_state['versions']
            self._frozen_changed_last_step = {
                name for name, p in forward_state['frozen'].items()
                if p._version != versions[name]}

    def _check_finite(self, log_vars: dict,
                      forward_state: Optional[dict] = None) -> None:
        """Stop training if a loss is NaN/inf on any process, before any
        backward or optimizer step; ``forward_state``
        (:meth:`_forward_state` before the forward) is then restored, so
        the model is exactly as the previous iteration left it."""
        if not self.train_cfg.get('check_finite', True):
            return
        bad = [k for k, v in log_vars.items()
               if 'loss' in k and not torch.isfinite(v).all()]
        if len(bad) > 1 and 'loss' in bad:
            bad.remove('loss')  # the total; name the culprit
        flag = torch.tensor([float(bool(bad))])
        if is_distributed():
            device = next(iter(log_vars.values())).device
            flag = flag.to(device)
            torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
        if flag.item() > 0:
            lost = []
            if forward_state is not None:
                lost = sorted(
                    name for name, p in forward_state['frozen'].items()
                    if name not in forward_state['copied'] and
                    p._version != forward_state['versions'][name])
                with torch.no_grad():
                    for tensor, saved in forward_state['copies']:
                        tensor.copy_(saved)
            it = self.current_iter
            detail = ', '.join(f'{k}={log_vars[k].item()}' for k in bad) \
                if bad else 'on another process'
            raise FloatingPointError(
                f'Non-finite loss at iteration {it}: {detail} (runner.iter '
                f'{it}, logged as Iter(train) [{it + 1}/...]). Training '
                'stopped before any update: weights, buffers and optimizer '
                'states are those after the previous iteration' +
                (f' (except {lost}: frozen parameters this iteration changed '
                 'in place for the first time)' if lost else '') +
                '. Lower the learning rate or the loss weight, or check the '
                'inputs of that loss.')

    def _reseed(self, iteration: int) -> None:
        """Seed the global RNGs (dropout, DropPath, anything a method draws
        from them) from (``rng_base_seed``, iteration, rank): mmengine does
        not checkpoint RNG states, so this is what lets a resumed run draw
        what the uninterrupted run drew (see :func:`iteration_seed`)."""
        rank = torch_dist.get_rank() if is_distributed() else 0
        seed_global_rngs(
            iteration_seed(int(self.rng_base_seed), iteration, rank))
        if hasattr(self.student, 'crop_rng'):  # HRDAEncoderDecoder
            self.student.crop_rng = np.random.RandomState(
                shared_iteration_seed(int(self.rng_base_seed), iteration))

    def train_step(self, data, optim_wrapper) -> Dict[str, Tensor]:
        return self.uda_train_step(data, optim_wrapper, self)

    def uda_train_step(self, data, optim_wrapper,
                       forward_module: nn.Module) -> Dict[str, Tensor]:
        """One UDA iteration: preprocess, one forward through
        ``forward_module`` (this model, or its DDP wrapper so gradients are
        all-reduced), backward of the segmentor and discriminator objectives,
        then both optimizer steps (after both backwards, so DDP has reduced
        every gradient before any parameter changes)."""
        seg_wrapper, disc_wrapper = self._split_optim_wrappers(optim_wrapper)
        self._settle_loaded_seeds()
        if self.train_cfg.get('reseed_per_iter', True):
            self._reseed(self.current_iter)
        forward_state = self._forward_state() \
            if self.train_cfg.get('check_finite', True) else None
        wrappers = [w for w in (seg_wrapper, disc_wrapper) if w is not None]
        with ExitStack() as stack:
            for wrapper in wrappers:
                stack.enter_context(wrapper.optim_context(forward_module))
            data = self.data_preprocessor(data, True)
            losses = forward_module._run_forward(data, mode='loss')
        self._note_frozen_changes(forward_state)
        disc_losses = {k: losses.pop(k) for k in list(losses)
                       if k in self._discriminator_loss_keys}
        seg_loss, log_vars = self.parse_losses(losses)
        if disc_wrapper is None:
            self._check_finite(log_vars, forward_state)
            seg_wrapper.update_params(seg_loss)
            return log_vars
        disc_loss, disc_vars = self.parse_losses(disc_losses)
        disc_vars.pop('loss')
        log_vars.update(disc_vars)
        self._check_finite(log_vars, forward_state)
        seg_wrapper.backward(seg_wrapper.scale_loss(seg_loss))
        disc_wrapper.backward(disc_wrapper.scale_loss(disc_loss))
        for wrapper in wrappers:
            if wrapper.should_update():
                wrapper.step()
                wrapper.zero_grad()
        return log_vars

    # ------------------------------------------------------------ inference
    def _predict_model(self) -> nn.Module:
        if self.test_cfg['predict_with'] == 'teacher':
            return self.teacher
        return self.student

    @contextmanager
    def _method_inference(self, model: nn.Module):
        overriding = [
            m for m in self.methods
            if type(m).test_encode_decode is not
            BaseUDAMethod.test_encode_decode
        ] if self.test_cfg.get('method_inference', True) else []
        if len(overriding) > 1:
            raise ValueError(
                'Several methods override test-time inference: '
                f'{[type(m).__name__ for m in overriding]}; set '
                'test_cfg.method_inference=False or drop one.')
        if not overriding:
            yield
            return
        method = overriding[0]
        original = model.encode_decode

        def encode_decode(inputs, batch_img_metas):
            out = method.test_encode_decode(model, inputs, batch_img_metas)
            return original(inputs, batch_img_metas) if out is None else out

        model.encode_decode = encode_decode
        try:
            yield
        finally:
            del model.encode_decode

    def predict(self, inputs: Tensor, data_samples=None):
        model = self._predict_model()
        with self._method_inference(model):
            return model.predict(inputs, data_samples)

    def _forward(self, inputs: Tensor, data_samples=None):
        return self._predict_model()._forward(inputs, data_samples)

    def extract_feat(self, inputs: Tensor):
        return self._predict_model().extract_feat(inputs)

    def encode_decode(self, inputs: Tensor, batch_img_metas: List[dict]):
        model = self._predict_model()
        with self._method_inference(model):
            return model.encode_decode(inputs, batch_img_metas)
