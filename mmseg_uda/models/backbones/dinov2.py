"""DINOv2 ViT backbone for mmseg 1.x, built on transformers' ``Dinov2Model``.

DINOv2 (Oquab et al., "DINOv2: Learning Robust Visual Features without
Supervision", TMLR 2024); official code facebookresearch/dinov2
(``dinov2/models/vision_transformer.py::DinoVisionTransformer``). The
network itself is Hugging Face transformers' ``Dinov2Model`` (the same
blocks: pre-norm attention and MLP/SwiGLU with layer scale); only the
position-embedding interpolation is overridden, because transformers
resizes to an output *size* while the official code resizes by a *scale
factor* ``(grid + 0.1) / M`` (``interpolate_offset=0.1``), and bicubic
resampling gives different values for the two (see
:class:`OfficialInterpolationEmbeddings`). With that override the features
equal the official ``get_intermediate_layers(x, n, reshape=True,
norm=True)`` to float32 precision at the native and at other sizes
(``tests/test_dinov2_backbone.py``).
"""
import math
import os.path as osp
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmseg_uda.models.utils.dinov2_checkpoint import (
    BACKBONE_PREFIX, OFFICIAL_ARCHS, DINOv2ConversionError,
    convert_dinov2_official, guess_official_arch, is_official_dinov2,
    strip_prefix)
from mmseg_uda.registry import MODELS

try:  # transformers is a hard requirement of this backbone only
    from transformers import Dinov2Config, Dinov2Model
    from transformers.models.dinov2.modeling_dinov2 import (Dinov2DropPath,
                                                            Dinov2Embeddings)
except ImportError as _err:  # pragma: no cover - reported on build
    Dinov2Config = Dinov2Model = Dinov2DropPath = None
    Dinov2Embeddings = nn.Module
    _TRANSFORMERS_ERROR = _err
else:
    _TRANSFORMERS_ERROR = None

_ARCH_ALIASES = {
    'small': 'small', 's': 'small', 'vits14': 'small', 'vit_small': 'small',
    'base': 'base', 'b': 'base', 'vitb14': 'base', 'vit_base': 'base',
    'large': 'large', 'l': 'large', 'vitl14': 'large', 'vit_large': 'large',
    'giant': 'giant', 'g': 'giant', 'vitg14': 'giant', 'vit_giant2': 'giant',
}
_CONVERT_HINT = (
    'Official files (dinov2_vit{s,b,l,g}14_pretrain.pth from '
    'facebookresearch/dinov2) load directly; or convert once with '
    '`python tools/model_converters/dinov2_to_mmseg_uda.py IN.pth OUT.pth`.')


class OfficialInterpolationEmbeddings(Dinov2Embeddings):
    """transformers' ``Dinov2Embeddings`` with the official resizing of the
    position embeddings.

    Official ``DinoVisionTransformer.interpolate_pos_encoding``
    (facebookresearch/dinov2@b8931f7b, released models built with
    ``interpolate_offset=0.1, interpolate_antialias=False`` in
    ``dinov2/hub/backbones.py``): the M×M grid is resized bicubically with
    ``scale_factor=((Hp + 0.1) / M, (Wp + 0.1) / M)``, in float32, and the
    native grid (same token count, square input) is used as is.
    transformers passes ``size=(Hp, Wp)`` instead, i.e. sampling at scale
    ``M / Hp``; PyTorch samples with the given scale factor, so the two
    differ (by up to 0.55 for random N(0, 0.25) embeddings resized from
    37×37 to 16×22 in the tests). Parameter names are unchanged, so
    checkpoints load as is.
    """

    interpolate_offset = 0.1

    def interpolate_pos_encoding(self, embeddings: Tensor, height: int,
                                 width: int) -> Tensor:
        num_patches = embeddings.shape[1] - 1
        num_positions = self.position_embeddings.shape[1] - 1
        if num_patches == num_positions and height == width:
            return self.position_embeddings
        pos = self.position_embeddings.float()
        dim = embeddings.shape[-1]
        patch_h, patch_w = self.patch_embeddings.patch_size
        grid_h, grid_w = height // patch_h, width // patch_w
        side = int(math.sqrt(num_positions))
        if side * side != num_positions:
            raise ValueError(
                f'position embeddings hold {num_positions} patch positions, '
                'not a square grid')
        patch_pos = pos[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(
            patch_pos,
            scale_factor=((grid_h + self.interpolate_offset) / side,
                          (grid_w + self.interpolate_offset) / side),
            mode='bicubic',
            antialias=False)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat((pos[:, :1], patch_pos),
                         dim=1).to(embeddings.dtype)


@MODELS.register_module()
class DINOv2VisionTransformer(BaseModule):
    """DINOv2 ViT as an mmseg backbone (transformers ``Dinov2Model``).

    Returns the patch tokens of the blocks in ``out_indices`` as NCHW maps
    ``(B, C, Hp, Wp)``, optionally after the final LayerNorm (official
    ``get_intermediate_layers(x, n=out_indices, reshape=True,
    norm=final_norm)``), for necks such as mmseg's ``Feature2Pyramid``.

    Args:
        arch (str | dict): ``'small'``/``'base'``/``'large'``/``'giant'``
            (aliases ``'s'``, ``'vits14'``, ``'vit_small'``, ...: the
            released ViT-S/B/L/g, g with SwiGLU), or a dict with
            ``embed_dims``, ``num_layers``, ``num_heads`` and optional
            ``mlp_ratio`` (int, default 4) and ``swiglu`` (default False).
        patch_size (int): patch size; 14 for the released weights.
        img_size (int): side of the image the position-embedding grid was
            trained for: 518 gives the released 37×37 grid.
        in_channels (int): input channels.
        out_indices (Sequence[int] | None): blocks whose outputs are
            returned (0-based; negative counts from the end). None: four
            evenly spaced blocks ending with the last, e.g. (2, 5, 8, 11)
            for 12 layers, (5, 11, 17, 23) for 24, (9, 19, 29, 39) for 40.
            Blocks after the last returned one are not run and are frozen
            (``requires_grad=False``, kept in the state dict).
        final_norm (bool): apply the final LayerNorm to every returned map
            (official ``norm=True``). Default True; when False the unused
            norm is frozen. In training without a token mask the mask token
            is kept in the graph with a zero gradient. Both keep every
            trainable parameter used, as DDP without
            ``find_unused_parameters`` requires.
        input_scale (float): resize the input by this factor (bilinear,
            ``align_corners=False``) to ``floor(side * input_scale / p) * p``
            pixels per side before the patch embedding, as VFM-UDA feeds
            its 1024 crops at 1120 px (tue-mps/vfm-uda@e154d8f5,
            ``models/vit_variants/vit_lightweight_head.py``,
            ``VITLightweightHead``: ``int((img_size * 1.1) // patch_size *
            patch_size)``). 1.0 (default) feeds the input unchanged.
        pad_to_patch (bool): a side that is not a multiple of
            ``patch_size`` is zero-padded at the right/bottom (mmseg ViT's
            ``padding='corner'``), giving ``ceil(side / p)`` tokens; the
            last row/column of tokens then also sees padding. Default True,
            as mmseg's ViT, so slide/whole inference works at any size.
            False raises a ValueError instead (the official code asserts).
        with_cp (bool): gradient (activation) checkpointing of every block
            through transformers' own mechanism (non-reentrant).
        attn_implementation (str): transformers attention backend:
            ``'sdpa'`` (default, fused ``scaled_dot_product_attention``),
            ``'eager'`` or any backend transformers supports here.
        drop_path_rate (float): stochastic depth of the last block; block
            i gets ``drop_path_rate * i / (num_layers - 1)`` (the official
            ``np.linspace`` rule) unless ``drop_path_uniform``.
        drop_path_uniform (bool): the same rate in every block (official
            ``drop_path_uniform``). Default False.
        layer_scale_init_value (float): initial layer scale for random
            init (the hub models use 1.0; pretrained weights overwrite it).
        pretrained (str | None): an official DINOv2 checkpoint
            (``dinov2_vit{s,b,l,g}14_pretrain.pth``, converted on load) or
            the output of
            ``tools/model_converters/dinov2_to_mmseg_uda.py``, loaded
            strictly.
            Same as ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
        init_cfg (dict | None): mmengine init config; only ``Pretrained``
            is meaningful (random init is transformers' own).
    """

    #: this backbone accepts :meth:`set_token_mask` (MIC-style token masking)
    supports_token_mask = True

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 patch_size: int = 14,
                 img_size: int = 518,
                 in_channels: int = 3,
                 out_indices: Optional[Sequence[int]] = None,
                 final_norm: bool = True,
                 input_scale: float = 1.0,
                 pad_to_patch: bool = True,
                 with_cp: bool = False,
                 attn_implementation: str = 'sdpa',
                 drop_path_rate: float = 0.0,
                 drop_path_uniform: bool = False,
                 layer_scale_init_value: float = 1.0,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[dict] = None):
        if _TRANSFORMERS_ERROR is not None:
            raise ImportError(
                'DINOv2VisionTransformer needs Hugging Face transformers '
                '(pip install -r requirements.txt)') from _TRANSFORMERS_ERROR
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError('DINOv2VisionTransformer: give either '
                                 'pretrained or init_cfg, not both')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        super().__init__(init_cfg=init_cfg)
        self.arch_name, arch_cfg = self._parse_arch(arch)
        self.embed_dims = arch_cfg['embed_dims']
        self.num_layers = arch_cfg['num_layers']
        self.patch_size = int(patch_size)
        self.img_size = int(img_size)
        if self.img_size < self.patch_size:
            raise ValueError(f'img_size={img_size} is smaller than '
                             f'patch_size={patch_size}')
        if input_scale <= 0:
            raise ValueError(f'input_scale must be > 0, got {input_scale}')
        self.input_scale = float(input_scale)
        self.pad_to_patch = pad_to_patch
        self.final_norm = final_norm
        self.with_cp = with_cp
        self.out_indices = self._parse_out_indices(out_indices,
                                                   self.num_layers)

        config = Dinov2Config(
            hidden_size=self.embed_dims,
            num_hidden_layers=self.num_layers,
            num_attention_heads=arch_cfg['num_heads'],
            mlp_ratio=arch_cfg['mlp_ratio'],
            use_swiglu_ffn=arch_cfg['swiglu'],
            image_size=self.img_size,
            patch_size=self.patch_size,
            num_channels=in_channels,
            qkv_bias=True,
            layer_norm_eps=1e-6,  # official norm_layer eps
            layerscale_value=layer_scale_init_value,
            hidden_act='gelu',  # exact GELU, as nn.GELU()
            drop_path_rate=0.0,  # per-block rates set below
            use_mask_token=True,
            attn_implementation=attn_implementation)
        self.dinov2 = Dinov2Model(config)
        embeddings = OfficialInterpolationEmbeddings(config)
        embeddings.load_state_dict(self.dinov2.embeddings.state_dict())
        self.dinov2.embeddings = embeddings
        self._check_layout()

        self.drop_path_rate = drop_path_rate
        if drop_path_rate > 0:
            last = max(self.num_layers - 1, 1)
            rates = ([drop_path_rate] * self.num_layers if drop_path_uniform
                     else [drop_path_rate * i / last
                           for i in range(self.num_layers)])
            for layer, rate in zip(self.dinov2.encoder.layer, rates):
                layer.drop_path = (Dinov2DropPath(rate)
                                   if rate > 0 else nn.Identity())
        # Parameters a forward never uses get no gradient, which breaks DDP
        # without find_unused_parameters: freeze the blocks after the last
        # returned one and the final norm when it is not applied (they stay
        # in the state dict, so released checkpoints still load strictly).
        for layer in self.dinov2.encoder.layer[max(self.out_indices) + 1:]:
            layer.requires_grad_(False)
        if not final_norm:
            self.dinov2.layernorm.requires_grad_(False)
        if with_cp:
            enable = getattr(self.dinov2, 'activation_checkpointing_enable',
                             None) or \
                self.dinov2.gradient_checkpointing_enable
            enable({'use_reentrant': False})
        self._token_mask: Optional[Tensor] = None

    # ------------------------------------------------------------------
    # construction helpers
    @staticmethod
    def _parse_arch(arch) -> Tuple[str, dict]:
        if isinstance(arch, str):
            key = arch.lower().replace('dinov2_', '')
            if key not in _ARCH_ALIASES:
                raise ValueError(
                    f'DINOv2VisionTransformer: unknown arch {arch!r}; use one '
                    f'of {sorted(OFFICIAL_ARCHS)} (or an alias: '
                    f'{sorted(set(_ARCH_ALIASES) - set(OFFICIAL_ARCHS))}) or '
                    'a dict(embed_dims, num_layers, num_heads[, mlp_ratio, '
                    'swiglu])')
            name = _ARCH_ALIASES[key]
            cfg = dict(OFFICIAL_ARCHS[name], mlp_ratio=4)
            return name, cfg
        if isinstance(arch, dict):
            needed = {'embed_dims', 'num_layers', 'num_heads'}
            allowed = needed | {'mlp_ratio', 'swiglu'}
            missing, extra = needed - set(arch), set(arch) - allowed
            if missing or extra:
                raise ValueError(
                    f'DINOv2VisionTransformer arch dict: missing '
                    f'{sorted(missing)}, unknown {sorted(extra)} (keys: '
                    f'{sorted(allowed)})')
            cfg = dict(mlp_ratio=4, swiglu=False)
            cfg.update(arch)
            if int(cfg['mlp_ratio']) != cfg['mlp_ratio']:
                raise ValueError('DINOv2VisionTransformer: mlp_ratio must be '
                                 "an integer (transformers' Dinov2Config), "
                                 f"got {cfg['mlp_ratio']}")
            cfg['mlp_ratio'] = int(cfg['mlp_ratio'])
            if cfg['embed_dims'] % cfg['num_heads']:
                raise ValueError(
                    f"embed_dims={cfg['embed_dims']} is not divisible by "
                    f"num_heads={cfg['num_heads']}")
            return 'custom', cfg
        raise TypeError(f'arch must be a str or dict, got {type(arch)}')

    @staticmethod
    def _parse_out_indices(out_indices, num_layers) -> Tuple[int, ...]:
        if out_indices is None:
            step = num_layers // 4 if num_layers >= 4 else 1
            out_indices = range(num_layers - 1 - step * (min(num_layers, 4) -
                                                         1), num_layers, step)
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        resolved = []
        for index in out_indices:
            i = index + num_layers if index < 0 else index
            if not 0 <= i < num_layers:
                raise ValueError(f'out_indices entry {index} is outside the '
                                 f'{num_layers} blocks')
            resolved.append(i)
        return tuple(resolved)

    def _check_layout(self):
        layer = self.dinov2.encoder.layer[0]
        if not hasattr(layer.attention, 'q_proj'):
            raise ImportError(
                'DINOv2VisionTransformer needs the transformers>=5 Dinov2 '
                'layout (attention.q_proj/k_proj/v_proj); install the '
                'version pinned in requirements.txt')

    # ------------------------------------------------------------------
    # token masking API
    @property
    def mask_token(self) -> nn.Parameter:
        """The learned mask token ``(1, C)`` (official ``mask_token``)."""
        return self.dinov2.embeddings.mask_token

    def token_grid(self, h: int, w: int) -> Tuple[int, int]:
        """(Hp, Wp): the token grid of a forward on an ``h``×``w`` input,
        after ``input_scale`` and padding."""
        h, w = self._scaled_size(h, w)
        return self._grid(h, w)

    def set_token_mask(self, mask: Optional[Tensor]) -> None:
        """Mask patch tokens in the next forward only.

        Args:
            mask: bool ``(B, Hp, Wp)`` on :meth:`token_grid` of the next
                input; True replaces that patch embedding by
                :attr:`mask_token` before the position embedding is added
                (official ``prepare_tokens_with_masks``, transformers'
                ``bool_masked_pos``). None clears a pending mask.
        """
        if mask is not None:
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool \
                    or mask.dim() != 3:
                raise ValueError(
                    'set_token_mask expects a bool tensor (B, Hp, Wp) on the '
                    'token grid of the next input (see token_grid(h, w)), '
                    f'got {getattr(mask, "dtype", type(mask))} of shape '
                    f'{tuple(getattr(mask, "shape", ()))}')
        self._token_mask = mask

    # ------------------------------------------------------------------
    # forward
    def _scaled_size(self, h: int, w: int) -> Tuple[int, int]:
        if self.input_scale == 1.0:
            return h, w
        p = self.patch_size
        # VFM-UDA rule: int((side * scale) // p * p)
        return int((h * self.input_scale) // p * p), \
            int((w * self.input_scale) // p * p)

    def _grid(self, h: int, w: int) -> Tuple[int, int]:
        p = self.patch_size
        if h % p or w % p:
            if not self.pad_to_patch:
                raise ValueError(
                    f'DINOv2VisionTransformer: input {h}x{w} (after '
                    f'input_scale={self.input_scale}) is not a multiple of '
                    f'patch_size={p}; set pad_to_patch=True or crop/resize '
                    f'the input to a multiple of {p}')
            return math.ceil(h / p), math.ceil(w / p)
        if h == 0 or w == 0:
            raise ValueError(f'input {h}x{w} is empty')
        return h // p, w // p

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        mask, self._token_mask = self._token_mask, None  # consumed here
        batch, in_h, in_w = x.shape[0], *x.shape[-2:]
        h, w = self._scaled_size(in_h, in_w)
        if (h, w) != tuple(x.shape[-2:]):
            x = F.interpolate(
                x, size=(h, w), mode='bilinear', align_corners=False)
        grid_h, grid_w = self._grid(h, w)
        p = self.patch_size
        pad_h, pad_w = grid_h * p - h, grid_w * p - w
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        bool_masked_pos = None
        if mask is not None:
            if tuple(mask.shape) != (batch, grid_h, grid_w):
                raise ValueError(
                    f'token mask has shape {tuple(mask.shape)}, expected '
                    f'{(batch, grid_h, grid_w)} (batch size and '
                    f'token_grid({in_h}, {in_w}) of this input)')
            bool_masked_pos = mask.to(x.device).flatten(1)
        hidden = self.dinov2.embeddings(x, bool_masked_pos=bool_masked_pos)
        if bool_masked_pos is None and self.training and \
                torch.is_grad_enabled() and self.mask_token.requires_grad:
            # keep the (unused) mask token in the graph with a zero
            # gradient, so DDP without find_unused_parameters works whether
            # or not this iteration masks tokens; adding 0 changes nothing
            hidden = hidden + 0 * self.mask_token.sum()
        feats = {}
        wanted = set(self.out_indices)
        for i, layer in enumerate(
                self.dinov2.encoder.layer[:max(wanted) + 1]):
            hidden = layer(hidden)  # positional: checkpointing needs it
            if i in wanted:
                out = self.dinov2.layernorm(hidden) if self.final_norm \
                    else hidden
                feats[i] = out[:, 1:].reshape(batch, grid_h, grid_w,
                                              -1).permute(0, 3, 1,
                                                          2).contiguous()
        return tuple(feats[i] for i in self.out_indices)

    # ------------------------------------------------------------------
    # weights
    def init_weights(self):
        """Load ``pretrained`` strictly; random init is transformers' own
        (done at construction), so nothing else happens here."""
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained' and \
                set(cfg) <= {'type', 'checkpoint', 'prefix', 'map_location'}:
            self.load_pretrained(cfg['checkpoint'], cfg.get('prefix'))
        elif cfg:
            raise ValueError(
                'DINOv2VisionTransformer supports only init_cfg='
                'dict(type="Pretrained", checkpoint=..., [prefix=...]) '
                f'(random init is transformers\' own), got {cfg}')
        self._is_init = True

    def load_pretrained(self, path: str, prefix: Optional[str] = None) -> None:
        """Load an official or converted DINOv2 checkpoint strictly.

        Args:
            path: the checkpoint file.
            prefix: load only the keys under this prefix, without it (e.g.
                ``'backbone.'`` for a whole segmentor checkpoint).

        Raises:
            FileNotFoundError / UntrustedCheckpointError: from the safe
                loader (``mmseg_uda.compat.load_local_checkpoint``).
            ValueError: missing/unexpected keys or shape mismatches, naming
                the file, the keys, both shapes and the setting to change.
        """
        from mmseg_uda.compat import load_local_checkpoint
        ckpt = load_local_checkpoint(osp.expanduser(path), map_location='cpu')
        if prefix:
            if isinstance(ckpt, dict) and isinstance(
                    ckpt.get('state_dict'), dict):
                ckpt = ckpt['state_dict']
            ckpt = {k[len(prefix):]: v for k, v in ckpt.items()
                    if k.startswith(prefix)}
            if not ckpt:
                raise ValueError(f'{path} has no keys under prefix '
                                 f'{prefix!r}')
        state = self.checkpoint_to_state_dict(ckpt, path)
        self._strict_load(state, path)
        print_log(
            f'DINOv2VisionTransformer: loaded {len(state)} tensors from '
            f'{path}', logger='current')

    @staticmethod
    def checkpoint_to_state_dict(ckpt, source: str = 'checkpoint'
                                 ) -> Dict[str, Tensor]:
        """Backbone state dict from a loaded official DINOv2 file (converted
        on the fly) or a ``tools/model_converters/dinov2_to_mmseg_uda.py``
        output."""
        if isinstance(ckpt, dict) and isinstance(ckpt.get('state_dict'),
                                                 dict):
            ckpt = ckpt['state_dict']
        if not isinstance(ckpt, dict) or not all(
                isinstance(v, Tensor) for v in ckpt.values()):
            raise ValueError(
                f'{source} is not a state dict (found {type(ckpt).__name__}'
                f'). {_CONVERT_HINT}')
        state = strip_prefix(ckpt, 'module.')
        if is_official_dinov2(state) or 'register_tokens' in state:
            try:
                return convert_dinov2_official(state, source)
            except DINOv2ConversionError as err:
                raise ValueError(str(err)) from err
        if not any(k.startswith(BACKBONE_PREFIX) for k in state):
            raise ValueError(
                f'{source} holds neither official DINOv2 keys '
                '(patch_embed.proj.weight, blocks.0.attn.qkv.weight, ...) '
                f'nor converted ones ({BACKBONE_PREFIX}embeddings...); '
                f'found {sorted(state)[:5]}. {_CONVERT_HINT}')
        return state

    def _strict_load(self, state: Dict[str, Tensor], source: str) -> None:
        self.check_state_dict(state, source)
        self.load_state_dict(state, strict=True)

    def check_state_dict(self, state: Dict[str, Tensor],
                         source: str = 'state dict') -> None:
        """Raise a ValueError unless ``state`` has exactly this backbone's
        keys and shapes; the message names the source, the keys, expected
        and found shapes and the setting that would fit the file."""
        expected = self.state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        mismatched = [(k, tuple(expected[k].shape), tuple(state[k].shape))
                      for k in expected
                      if k in state and expected[k].shape != state[k].shape]
        if not (missing or unexpected or mismatched):
            return

        def listing(items):
            more = f', ... ({len(items)} in all)' if len(items) > 4 else ''
            return ', '.join(items[:4]) + more

        problems = []
        if mismatched:
            problems.append('shape mismatch: ' + listing(
                [f'{k} expected {e} found {f}' for k, e, f in mismatched]))
        if missing:
            problems.append('missing: ' + listing(missing))
        if unexpected:
            problems.append('unexpected: ' + listing(unexpected))
        hints = []
        found = guess_official_arch(state)
        if found and found != self.arch_name:
            hints.append(f"the file is DINOv2 ViT-{found[0].upper()}/14: set "
                         f"arch='{found}'")
        proj = BACKBONE_PREFIX + 'embeddings.patch_embeddings.projection.' \
                                 'weight'
        if proj in state and state[proj].dim() == 4 and \
                state[proj].shape[-1] != self.patch_size:
            hints.append(f'set patch_size={state[proj].shape[-1]}')
        pos = BACKBONE_PREFIX + 'embeddings.position_embeddings'
        if pos in state and pos in expected and \
                state[pos].shape[1] != expected[pos].shape[1]:
            side = math.isqrt(state[pos].shape[1] - 1)
            hints.append(
                f'the position grid is {side}x{side}: set img_size='
                f'{side * self.patch_size}')
        hint = ('; '.join(hints) + '. ') if hints else ''
        raise ValueError(
            f'DINOv2VisionTransformer (arch={self.arch_name!r}, '
            f'patch_size={self.patch_size}, img_size={self.img_size}) cannot '
            f'load {source}: ' + '; '.join(problems) + f'. {hint}'
            + _CONVERT_HINT)
