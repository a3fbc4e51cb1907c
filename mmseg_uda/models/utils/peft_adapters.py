"""Frozen encoder and parameter-efficient adapters (LoRA) for any mmseg
backbone.

``UDASegmentor(freeze_backbone=True)`` freezes the student's (and teacher's)
backbone: its parameters get ``requires_grad=False`` (so no gradient and no
optimizer state), it runs in eval mode (BatchNorm statistics fixed, dropout
and DropPath off: the frozen encoder is a deterministic function, as in Rein,
w1oves/Rein@7da85bcb ``rein/models/segmentors/frozen_encoder_decoder.py``
and ``rein/models/backbones/utils.py::set_train``), and the EMA teacher skips
its parameters. ``backbone_adapter=dict(type='LoRA', ...)`` then trains a
low-rank update of chosen layers of the frozen encoder (Hu et al., "LoRA:
Low-Rank Adaptation of Large Language Models", ICLR 2022, Eq. 3):

    h = W0·x + (α / r)·B·A·x,   A ∈ R^{r×k}, B ∈ R^{d×r}, B = 0 at the start,

injected with Hugging Face ``peft`` (``inject_adapter_in_model`` +
``LoraConfig``), so every layer type peft supports (``nn.Linear``,
``nn.Conv1d/2d/3d``, ``nn.Embedding``, ``nn.MultiheadAttention``) and
peft's options (``use_rslora``, ``exclude_modules``, ``rank_pattern``, ...)
are available through the same config. Defaults: ``rank`` 16, ``alpha`` =
``rank`` (scale 1), ``dropout`` 0; A is Kaiming-uniform and B = 0 (peft's
default, as microsoft/LoRA ``loralib``), so training starts from the plain
backbone's function. Inits computed from the pretrained weights (DoRA,
PiSSA, OLoRA, ...) are refused: the adapter is injected at construction,
before ``init_weights`` loads those weights.

The adapter is injected when the model is built (the Runner builds the
optimizer before ``init_weights``); ``UDASegmentor.init_weights`` runs the
backbone's own initialisation and pretrained loading on the plain layers
(:func:`adapters_unwrapped`), and a load-state-dict pre-hook maps a plain
checkpoint's ``<layer>.weight`` to peft's ``<layer>.base_layer.weight``.
Checkpoints of an adapted model hold ``base_layer`` and ``lora_A/B`` keys:
test with the same config (or merge with :func:`merge_adapters`).

Without an adapter nothing in the frozen encoder requires a gradient, so
autograd records no graph for it (the memory and time of ``torch.no_grad``,
see ``tests/test_frozen_adapter.py``) while a gradient with respect to the
input, if a method ever needs one, still flows.
"""
import inspect
import sys
from contextlib import contextmanager
from typing import Dict, List, Optional

from torch import nn

#: Adapter types ``backbone_adapter.type`` accepts (case-insensitive).
ADAPTER_TYPES = ('LoRA', )

#: Our names (Hu et al.'s symbols) → ``peft.LoraConfig`` field names.
_LORA_ARGS = dict(rank='r', alpha='lora_alpha', dropout='lora_dropout',
                  target_modules='target_modules')

_ADAPTER_NAME = 'default'  # peft's adapter name; one adapter per backbone


def _adaptable_types() -> tuple:
    """Module types peft's LoRA can wrap (its dispatchers in
    ``peft/tuners/lora/model.py``)."""
    types = [nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding,
             nn.MultiheadAttention]
    try:
        from transformers.pytorch_utils import Conv1D
        types.append(Conv1D)
    except ImportError:  # transformers is optional for LoRA itself
        pass
    return tuple(types)


def adaptable_module_names(module: nn.Module, limit: int = 12) -> List[str]:
    """Distinct name suffixes of the layers LoRA can wrap in ``module``
    (what ``target_modules`` matches, peft's rule: a full name or its
    ending after a dot), e.g. ``['q_proj', 'k_proj', 'v_proj', 'o_proj',
    'fc1', 'fc2']``; an index is kept with its parent (``'ffn.layers.0'``)."""
    types = _adaptable_types()
    seen: Dict[str, None] = {}
    for name, sub in module.named_modules():
        if name and isinstance(sub, types):
            parts = name.split('.')
            keep, words = 1, 0
            if parts[-1].isdigit():  # 'layers.0' alone is ambiguous
                while keep < len(parts) and words < 2:
                    keep += 1
                    words += not parts[-keep].isdigit()
            seen.setdefault('.'.join(parts[-keep:]), None)
    names = list(seen)
    return names[:limit] + (['...'] if len(names) > limit else [])


def _lora_config(cfg: dict, key: str):
    """``peft.LoraConfig`` from ``dict(type='LoRA', rank, alpha, dropout,
    target_modules, **other LoraConfig fields)``; errors name ``key``."""
    LoraConfig = _import_peft(key).LoraConfig
    cfg = dict(cfg)
    cfg.pop('type')
    if 'target_modules' not in cfg:
        raise ValueError(
            f'{key}.target_modules is required: the names of the layers to '
            "adapt, e.g. target_modules=['q_proj', 'v_proj'] (LoRA adapts "
            'the attention query and value projections, Hu et al. 2022 §7.1).')
    targets = cfg['target_modules']
    if isinstance(targets, str):
        pass  # a regular expression on the full module name (peft's rule)
    elif (not isinstance(targets, (list, tuple)) or not targets
          or not all(isinstance(t, str) and t for t in targets)):
        raise ValueError(
            f'{key}.target_modules must be a non-empty list of module names '
            f'(or one regular expression), got {targets!r}.')
    else:
        cfg['target_modules'] = list(targets)
    rank = cfg.get('rank', 16)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f'{key}.rank must be a positive int, got {rank!r}.')
    dropout = cfg.get('dropout', 0.0)
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f'{key}.dropout must be in [0, 1), got {dropout!r}.')
    fields = set(inspect.signature(LoraConfig).parameters)
    kwargs = dict(r=rank, lora_alpha=cfg.pop('alpha', rank),
                  lora_dropout=float(dropout), bias='none')
    cfg.pop('rank', None)
    cfg.pop('dropout', None)
    for name, value in cfg.items():
        if name in _LORA_ARGS.values() and name != 'target_modules':
            raise ValueError(
                f'{key}.{name}: use {key}.'
                f'{[k for k, v in _LORA_ARGS.items() if v == name][0]}.')
        if name not in fields or name in ('bias', 'task_type',
                                          'modules_to_save'):
            raise ValueError(
                f'{key}.{name} is not a LoRA option. Use rank, alpha, '
                'dropout, target_modules, or another field of '
                'peft.LoraConfig (e.g. use_rslora, exclude_modules, '
                'rank_pattern, alpha_pattern).')
        if name == 'use_dora' and value or name == 'init_lora_weights' and \
                value not in (True, 'gaussian'):
            # injected at construction, before init_weights loads the
            # pretrained weights: an init computed from W0 would be stale
            raise ValueError(
                f'{key}.{name}={value!r} is not supported: it initialises '
                'the adapter from the backbone weights at injection, before '
                "init_weights loads the pretrained ones. Use B = 0 inits "
                "(init_lora_weights=True or 'gaussian').")
        kwargs[name] = value
    return LoraConfig(**kwargs)


def _rename_base_layer_keys(module, state_dict, prefix, *args) -> None:
    """Load-state-dict pre-hook of a LoRA-wrapped layer: a checkpoint of the
    plain backbone stores ``<layer>.weight``, peft's wrapper holds it as
    ``<layer>.base_layer.weight``. Renaming here lets pretrained weights
    (``init_cfg``), ``load_from`` and plain mmseg checkpoints load into an
    adapted backbone without a silent miss of the adapted layers."""
    base = module.get_base_layer()
    for name in list(base.state_dict(keep_vars=True)):
        old, new = prefix + name, prefix + 'base_layer.' + name
        if old in state_dict and new not in state_dict:
            state_dict[new] = state_dict.pop(old)


def _named_tuner_layers(module: nn.Module) -> list:
    if 'peft' not in sys.modules:  # nothing injected; importing costs ~5 s
        return []
    from peft.tuners.tuners_utils import BaseTunerLayer
    return [(n, m) for n, m in module.named_modules()
            if isinstance(m, BaseTunerLayer)]


def _import_peft(key: str):
    try:
        import peft
    except ImportError as err:
        raise ImportError(
            f'{key} needs Hugging Face peft: pip install -r '
            'requirements.txt (or pip install peft).') from err
    return peft


def tuner_layers(module: nn.Module) -> List[nn.Module]:
    """The peft adapter layers (LoRA-wrapped layers) inside ``module``."""
    return [m for _, m in _named_tuner_layers(module)]


def inject_backbone_adapter(backbone: nn.Module, cfg: dict,
                            key: str = 'backbone_adapter') -> List[str]:
    """Wrap the layers of ``backbone`` that ``cfg['target_modules']`` names
    with LoRA (in place) and freeze everything else in it. Returns the
    names of the wrapped layers.

    Raises ``ValueError`` naming ``key`` when the type is unknown, an option
    is invalid, the targets match no layer, or a matched layer is of a type
    LoRA cannot wrap (listing the layers it can wrap)."""
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise ValueError(
            f"{key} must be a dict with a 'type' (one of {ADAPTER_TYPES}), "
            f'got {cfg!r}.')
    adapter_type = str(cfg['type'])
    if adapter_type.lower() not in [t.lower() for t in ADAPTER_TYPES]:
        raise ValueError(
            f'{key}.type={adapter_type!r} is not a known adapter; available: '
            f'{list(ADAPTER_TYPES)}.')
    if tuner_layers(backbone):
        raise ValueError(f'{key}: {type(backbone).__name__} already holds '
                         'peft adapter layers; inject one adapter only.')
    inject_adapter_in_model = _import_peft(key).inject_adapter_in_model
    from peft.utils.error import PeftError

    config = _lora_config(cfg, key)
    available = adaptable_module_names(backbone)
    backbone.requires_grad_(False)
    try:
        inject_adapter_in_model(config, backbone, adapter_name=_ADAPTER_NAME)
    except (PeftError, ValueError, TypeError) as err:
        raise ValueError(
            f'{key}.target_modules={cfg["target_modules"]!r} cannot be '
            f'adapted in {type(backbone).__name__}: {err} Layers LoRA can '
            f'wrap here (Linear, Conv, Embedding, MultiheadAttention): '
            f'{available}.') from err
    layers = []
    for name, sub in _named_tuner_layers(backbone):
        sub.register_load_state_dict_pre_hook(_rename_base_layer_keys)
        layers.append(name)
    return layers


@contextmanager
def adapters_unwrapped(module: nn.Module):
    """Temporarily put every adapted layer's original layer back in its
    place (the same module objects, so whatever is loaded into them stays).

    ``init_weights`` runs inside it: a backbone's own initialisation (e.g.
    MiT's truncated-normal init of every ``nn.Linear``, which would also
    redraw LoRA's B ≠ 0) and its strict pretrained loading (which expects
    the plain key names) then see the backbone they were written for, and
    the adapter keeps its construction-time values (B = 0)."""
    swapped = []
    for name, layer in _named_tuner_layers(module):
        parent_name, _, attr = name.rpartition('.')
        parent = module.get_submodule(parent_name)
        if getattr(parent, attr) is layer:  # nested tuner layers: outermost
            setattr(parent, attr, layer.get_base_layer())
            swapped.append((parent, attr, layer))
    try:
        yield module
    finally:
        for parent, attr, layer in reversed(swapped):
            setattr(parent, attr, layer)


def merge_adapters(module: nn.Module) -> None:
    """W0 ← W0 + (α/r)·B·A in every adapted layer (inference without the
    extra matmuls; ``unmerge_adapters`` undoes it)."""
    for layer in tuner_layers(module):
        layer.merge(safe_merge=True)


def unmerge_adapters(module: nn.Module) -> None:
    for layer in tuner_layers(module):
        layer.unmerge()


def set_frozen_train_mode(backbone: nn.Module, mode: bool) -> None:
    """A frozen backbone stays in eval mode; only its adapters (LoRA
    dropout) follow ``mode``."""
    backbone.train(False)
    if mode:
        for layer in tuner_layers(backbone):
            for name, child in layer.named_children():
                if name.startswith('lora_'):
                    child.train(True)


def apply_backbone_tuning(segmentor: nn.Module, freeze: bool,
                          adapter: Optional[dict],
                          key: str = 'backbone_adapter') -> List[str]:
    """Freeze ``segmentor.backbone`` and inject ``adapter`` into it; the
    names of the adapted layers are returned (empty without an adapter)."""
    if adapter is not None and not freeze:
        raise ValueError(
            f'{key} is set but freeze_backbone=False: an adapter trains an '
            'update of frozen weights; set freeze_backbone=True (or remove '
            f'{key} for full fine-tuning).')
    if not freeze:
        return []
    backbone = getattr(segmentor, 'backbone', None)
    if not isinstance(backbone, nn.Module):
        raise ValueError(
            f'freeze_backbone=True but {type(segmentor).__name__} has no '
            '`backbone` module to freeze.')
    backbone.requires_grad_(False)
    if adapter is None:
        return []
    layers = inject_backbone_adapter(backbone, adapter, key)
    return layers
