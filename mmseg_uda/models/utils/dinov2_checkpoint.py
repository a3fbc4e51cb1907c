"""Convert official DINOv2 checkpoints to the key layout of transformers'
``Dinov2Model`` (as held by :class:`DINOv2VisionTransformer`).

The official files (``dinov2_vit{s,b,l,g}14_pretrain.pth`` from
facebookresearch/dinov2, ``dinov2/hub/backbones.py``) are bare state dicts of
``dinov2/models/vision_transformer.py::DinoVisionTransformer`` with
``block_chunks=0``. Per block the official layout fuses q, k and v into one
``attn.qkv`` linear (rows ordered q, k, v: the forward reshapes the output to
``(B, N, 3, heads, head_dim)``) and, for ViT-g, the SwiGLU gate and up
projections into one ``mlp.w12`` linear (``x1, x2 = w12(x).chunk(2)``,
``silu(x1) * x2``: first half gate, second half up); transformers keeps them
as separate linears. Everything else is renamed one to one.

Functions here only rename/split tensors; values are never changed, so the
converted network computes the same function (proven against the official
code by ``tests/test_dinov2_backbone.py``).
"""
import re
from typing import Dict, Mapping, Optional

import torch
from torch import Tensor

#: prefix of the transformers ``Dinov2Model`` inside the backbone
BACKBONE_PREFIX = 'dinov2.'

#: official architectures of the released checkpoints
#: (dinov2/models/vision_transformer.py vit_small/base/large/giant2)
OFFICIAL_ARCHS = {
    'small': dict(embed_dims=384, num_layers=12, num_heads=6, swiglu=False),
    'base': dict(embed_dims=768, num_layers=12, num_heads=12, swiglu=False),
    'large': dict(embed_dims=1024, num_layers=24, num_heads=16, swiglu=False),
    'giant': dict(embed_dims=1536, num_layers=40, num_heads=24, swiglu=True),
}

# one-to-one renames outside the blocks (official -> transformers)
_STEM_KEYS = {
    'cls_token': 'embeddings.cls_token',
    'mask_token': 'embeddings.mask_token',
    'pos_embed': 'embeddings.position_embeddings',
    'patch_embed.proj.weight': 'embeddings.patch_embeddings.projection.weight',
    'patch_embed.proj.bias': 'embeddings.patch_embeddings.projection.bias',
    'norm.weight': 'layernorm.weight',
    'norm.bias': 'layernorm.bias',
}
# one-to-one renames inside block i (official suffix -> transformers suffix)
_BLOCK_KEYS = {
    'norm1.weight': 'norm1.weight',
    'norm1.bias': 'norm1.bias',
    'attn.proj.weight': 'attention.o_proj.weight',
    'attn.proj.bias': 'attention.o_proj.bias',
    'ls1.gamma': 'layer_scale1.lambda1',
    'norm2.weight': 'norm2.weight',
    'norm2.bias': 'norm2.bias',
    'mlp.fc1.weight': 'mlp.fc1.weight',
    'mlp.fc1.bias': 'mlp.fc1.bias',
    'mlp.fc2.weight': 'mlp.fc2.weight',
    'mlp.fc2.bias': 'mlp.fc2.bias',
    'mlp.w3.weight': 'mlp.down_proj.weight',
    'mlp.w3.bias': 'mlp.down_proj.bias',
    'ls2.gamma': 'layer_scale2.lambda1',
}
# fused official tensors split along dim 0 into these transformers suffixes
_SPLIT_KEYS = {
    'attn.qkv': ('attention.q_proj', 'attention.k_proj', 'attention.v_proj'),
    'mlp.w12': ('mlp.gate_proj', 'mlp.up_proj'),
}
# official block keys, with an optional chunk index (block_chunks > 0 files
# store block i of chunk c as blocks.c.i)
_BLOCK_RE = re.compile(r'^blocks\.(?:\d+\.)?(\d+)\.(.+)$')


class DINOv2ConversionError(ValueError):
    """An official DINOv2 state dict holds a key this converter does not
    know (or a register-token checkpoint, which is not supported)."""


def is_official_dinov2(state: Mapping) -> bool:
    """Whether a state dict uses the official DINOv2 key names."""
    return 'patch_embed.proj.weight' in state and 'pos_embed' in state


def strip_prefix(state: Mapping[str, Tensor],
                 prefix: str) -> Dict[str, Tensor]:
    """Remove ``prefix`` from every key that has it."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v
            for k, v in state.items()}


def convert_dinov2_official(
        state: Mapping[str, Tensor],
        source: str = 'state dict',
        prefix: str = BACKBONE_PREFIX) -> Dict[str, Tensor]:
    """Map an official DINOv2 state dict to transformers ``Dinov2Model`` keys.

    Args:
        state: the official state dict (``module.`` prefixes are stripped).
        source: what to name in errors (e.g. the file path).
        prefix: put before every output key; the default gives the keys of
            :class:`DINOv2VisionTransformer`, ``''`` those of a bare
            ``Dinov2Model``.

    Returns:
        A new dict; fused ``qkv``/``w12`` tensors are split into
        contiguous copies, everything else is the same tensor under its new
        name.

    Raises:
        DINOv2ConversionError: register tokens (``*_reg4`` checkpoints) or a
            key the official ``DinoVisionTransformer`` does not have.
    """
    state = strip_prefix(state, 'module.')
    if 'register_tokens' in state:
        raise DINOv2ConversionError(
            f'{source} is a DINOv2 checkpoint with register tokens '
            f'(register_tokens {tuple(state["register_tokens"].shape)}, the '
            '*_reg4 models); DINOv2VisionTransformer is built on '
            "transformers' Dinov2Model, which has no registers. Use the "
            'checkpoint without registers '
            '(dinov2_vit{s,b,l,g}14_pretrain.pth).')
    out, unknown = {}, []
    for key, value in state.items():
        if key in _STEM_KEYS:
            if key == 'mask_token':
                # (1, C) in released files; accept (C,) or (1, 1, C) too
                value = value.reshape(1, -1)
            out[prefix + _STEM_KEYS[key]] = value
            continue
        match = _BLOCK_RE.match(key)
        if match is None:
            unknown.append(key)
            continue
        index, rest = match.groups()
        layer = f'{prefix}encoder.layer.{int(index)}.'
        if rest in _BLOCK_KEYS:
            out[layer + _BLOCK_KEYS[rest]] = value
            continue
        name, _, kind = rest.rpartition('.')
        if name in _SPLIT_KEYS and kind in ('weight', 'bias'):
            targets = _SPLIT_KEYS[name]
            if value.shape[0] % len(targets):
                raise DINOv2ConversionError(
                    f'{source}: {key} has {value.shape[0]} rows, not a '
                    f'multiple of {len(targets)} ({name} fuses '
                    f'{", ".join(targets)}).')
            for target, part in zip(targets,
                                    value.chunk(len(targets), dim=0)):
                out[f'{layer}{target}.{kind}'] = part.clone()
            continue
        unknown.append(key)
    if unknown:
        more = f' ... ({len(unknown)} in all)' if len(unknown) > 5 else ''
        raise DINOv2ConversionError(
            f'{source} has keys an official DINOv2 DinoVisionTransformer '
            f'does not: {", ".join(unknown[:5])}{more}. Expected a '
            'dinov2_vit{s,b,l,g}14_pretrain.pth state dict.')
    return out


def guess_official_arch(state: Mapping[str, Tensor]) -> Optional[str]:
    """The released architecture whose width and depth match an official or
    converted state dict, or None (used to suggest ``arch=`` in errors)."""
    width = None
    for key in ('patch_embed.proj.weight',
                BACKBONE_PREFIX + 'embeddings.patch_embeddings.projection.'
                'weight'):
        if key in state:
            width = state[key].shape[0]
    depth = len({
        m.group(1)
        for m in (re.search(r'(?:^|\.)(?:blocks|layer)\.(?:\d+\.)?(\d+)\.', k)
                  for k in state) if m
    })
    for name, arch in OFFICIAL_ARCHS.items():
        if arch['embed_dims'] == width and arch['num_layers'] == depth:
            return name
    return None


def official_key_shapes(arch: str,
                        patch_size: int = 14,
                        img_size: int = 518) -> Dict[str, tuple]:
    """Key -> shape of a released official checkpoint, computed from the
    architecture table (``block_chunks=0``, no registers, layer scale on).

    Lets a key mapping be checked without the official code or weights
    (with :func:`meta_state_dict`); the tests compare it with the key lists
    recorded from the official models.
    """
    cfg = OFFICIAL_ARCHS[arch]
    c = cfg['embed_dims']
    grid = img_size // patch_size
    shapes = {
        'cls_token': (1, 1, c),
        'pos_embed': (1, grid * grid + 1, c),
        'mask_token': (1, c),
        'patch_embed.proj.weight': (c, 3, patch_size, patch_size),
        'patch_embed.proj.bias': (c, ),
    }
    hidden = 4 * c
    for i in range(cfg['num_layers']):
        b = f'blocks.{i}.'
        shapes.update({
            b + 'norm1.weight': (c, ),
            b + 'norm1.bias': (c, ),
            b + 'attn.qkv.weight': (3 * c, c),
            b + 'attn.qkv.bias': (3 * c, ),
            b + 'attn.proj.weight': (c, c),
            b + 'attn.proj.bias': (c, ),
            b + 'ls1.gamma': (c, ),
            b + 'norm2.weight': (c, ),
            b + 'norm2.bias': (c, ),
            b + 'ls2.gamma': (c, ),
        })
        if cfg['swiglu']:
            h = (int(hidden * 2 / 3) + 7) // 8 * 8
            shapes.update({
                b + 'mlp.w12.weight': (2 * h, c),
                b + 'mlp.w12.bias': (2 * h, ),
                b + 'mlp.w3.weight': (c, h),
                b + 'mlp.w3.bias': (c, ),
            })
        else:
            shapes.update({
                b + 'mlp.fc1.weight': (hidden, c),
                b + 'mlp.fc1.bias': (hidden, ),
                b + 'mlp.fc2.weight': (c, hidden),
                b + 'mlp.fc2.bias': (c, ),
            })
    shapes['norm.weight'] = (c, )
    shapes['norm.bias'] = (c, )
    return shapes


def meta_state_dict(shapes: Mapping[str, tuple]) -> Dict[str, Tensor]:
    """Tensors on the meta device with the given shapes (no memory), for
    checking a key mapping without real weights."""
    return {k: torch.empty(s, device='meta') for k, s in shapes.items()}
