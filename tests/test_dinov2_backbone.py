"""DINOv2VisionTransformer: equality with the official DINOv2 code, key
mapping of the released checkpoints, strict loading, token masking,
padding/input scale, gradient checkpointing, and an mmseg EncoderDecoder.

The reference numbers in ``tests/fixtures/dinov2_reference.pt`` come from the
official ``DinoVisionTransformer`` (facebookresearch/dinov2@b8931f7b,
``dinov2/models/vision_transformer.py``; ``get_intermediate_layers(x, n,
reshape=True, norm=True)`` and ``forward_features(x, masks)``) run once on
tiny random networks; ``dinov2_reference.json`` records how (repository,
commit, settings, input formula) and the key -> shape lists of the released
ViT-S/B/L/g.
"""
import importlib.util
import json
import math
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from transformers.models.dinov2.modeling_dinov2 import Dinov2Embeddings

from mmseg_uda.models.backbones.dinov2 import (
    DINOv2VisionTransformer, OfficialInterpolationEmbeddings)
from mmseg_uda.models.utils.dinov2_checkpoint import (
    DINOv2ConversionError, convert_dinov2_official, guess_official_arch,
    meta_state_dict, official_key_shapes)
from mmseg_uda.registry import MODELS

FIXTURES = osp.join(osp.dirname(__file__), 'fixtures')
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
REF = torch.load(
    osp.join(FIXTURES, 'dinov2_reference.pt'), weights_only=True)
with open(osp.join(FIXTURES, 'dinov2_reference.json')) as f:
    META = json.load(f)
ATOL = RTOL = 1e-5


def reference_input(batch, height, width):
    """The fixture's input (``input`` in dinov2_reference.json): a
    noise-like hash of the pixel coordinates, computed in float64."""
    c = torch.arange(3, dtype=torch.float64).view(1, 3, 1, 1)
    b = torch.arange(batch, dtype=torch.float64).view(batch, 1, 1, 1)
    i = torch.arange(height, dtype=torch.float64).view(1, 1, height, 1)
    j = torch.arange(width, dtype=torch.float64).view(1, 1, 1, width)
    v = torch.sin(i * 12.9898 + j * 78.233 + c * 37.719 + b * 4.581) \
        * 43758.5453
    return ((v - torch.floor(v)) * 3.0 - 1.5).float()


def reference_mask(batch, gh, gw):
    """The fixture's token mask (``mask`` in dinov2_reference.json)."""
    i = torch.arange(gh).view(1, gh, 1)
    j = torch.arange(gw).view(1, 1, gw)
    b = torch.arange(batch).view(batch, 1, 1)
    return ((i * 7 + j * 3 + b) % 5) == 0


def official_state(name):
    prefix = f'{name}/state/'
    return {
        k[len(prefix):]: v.float()
        for k, v in REF.items() if k.startswith(prefix)
    }


def tiny_arch(name):
    cfg = META['configs'][name]
    return dict(
        embed_dims=cfg['embed_dim'],
        num_layers=cfg['depth'],
        num_heads=cfg['heads'],
        swiglu=cfg['ffn_layer'] != 'mlp')


def reference_backbone(name, **kwargs):
    cfg = META['configs'][name]
    kwargs.setdefault('out_indices', cfg['n'])
    model = DINOv2VisionTransformer(
        arch=tiny_arch(name), img_size=cfg['img_size'], **kwargs)
    model.load_state_dict(
        convert_dinov2_official(official_state(name)), strict=True)
    return model.eval()


def ref_features(name, tag):
    return [REF[f'{name}/{tag}/block{i}'] for i in META['configs'][name]['n']]


def subsample(name, tag, feats):
    # the native 518 outputs of the 'mlp' fixture keep every 2nd token
    if name == 'mlp' and tag == 'native':
        return [f[..., ::2, ::2] for f in feats]
    return list(feats)


TINY = dict(embed_dims=32, num_layers=4, num_heads=2)


def tiny(**kwargs):
    kwargs.setdefault('arch', TINY)
    kwargs.setdefault('patch_size', 8)
    kwargs.setdefault('img_size', 64)
    torch.manual_seed(0)
    return DINOv2VisionTransformer(**kwargs)


# ---------------------------------------------------------------- official
@pytest.mark.parametrize('name', ['mlp', 'swiglu'])
@pytest.mark.parametrize('tag', ['native', 'other'])
def test_equals_official_get_intermediate_layers(name, tag):
    """Converted weights give the official features at the native grid
    size and at a non-native size (position-embedding interpolation)."""
    model = reference_backbone(name)
    h, w = META['configs'][name]['sizes'][tag]
    with torch.no_grad():
        feats = subsample(name, tag, model(reference_input(1, h, w)))
    refs = ref_features(name, tag)
    assert len(feats) == len(refs)
    for feat, ref in zip(feats, refs):
        assert feat.shape == ref.shape
        torch.testing.assert_close(feat, ref, atol=ATOL, rtol=RTOL)


def test_eager_attention_equals_official():
    model = reference_backbone('mlp', attn_implementation='eager')
    with torch.no_grad():
        feats = model(reference_input(1, 224, 308))
    for feat, ref in zip(feats, ref_features('mlp', 'other')):
        torch.testing.assert_close(feat, ref, atol=ATOL, rtol=RTOL)


def test_transformers_interpolation_differs_from_official():
    """Negative control: transformers' own interpolation (resize to a size,
    no 0.1 offset) is measurably different at a non-native size, so the
    override is what makes the equality above hold."""
    model = reference_backbone('mlp')
    emb = model.dinov2.embeddings
    assert isinstance(emb, OfficialInterpolationEmbeddings)
    tokens = torch.zeros(1, 16 * 22 + 1, 16)
    ours = emb.interpolate_pos_encoding(tokens, 224, 308)
    theirs = Dinov2Embeddings.interpolate_pos_encoding(emb, tokens, 224, 308)
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() > 1e-2
    with torch.no_grad():
        model.dinov2.embeddings.interpolate_pos_encoding = \
            lambda e, h, w: Dinov2Embeddings.interpolate_pos_encoding(
                emb, e, h, w)
        feats = model(reference_input(1, 224, 308))
    ref = ref_features('mlp', 'other')[-1]
    assert (feats[-1] - ref).abs().max() > 1e-3
    # native square size: both use the stored grid unchanged
    native = torch.zeros(1, 37 * 37 + 1, 16)
    assert torch.equal(
        emb.interpolate_pos_encoding(native, 518, 518),
        emb.position_embeddings)


@pytest.mark.parametrize('name', ['mlp', 'swiglu'])
def test_token_mask_equals_official_masks(name):
    """set_token_mask == official forward_features(x, masks) (patch
    embedding replaced by mask_token before the position embedding)."""
    cfg = META['configs'][name]
    model = reference_backbone(name, out_indices=[cfg['depth'] - 1])
    h, w = cfg['sizes']['other']
    x = reference_input(2, h, w)
    mask = reference_mask(2, *model.token_grid(h, w))
    model.set_token_mask(mask)
    with torch.no_grad():
        feat, = model(x)
    torch.testing.assert_close(
        feat, REF[f'{name}/masked/last'], atol=ATOL, rtol=RTOL)


def test_pretrained_official_file_loads_and_matches(tmp_path):
    """pretrained=<official .pth> converts on the fly (safe loader)."""
    path = str(tmp_path / 'dinov2_tiny_pretrain.pth')
    torch.save(official_state('swiglu'), path)
    cfg = META['configs']['swiglu']
    model = MODELS.build(
        dict(
            type='DINOv2VisionTransformer',
            arch=tiny_arch('swiglu'),
            img_size=cfg['img_size'],
            out_indices=cfg['n'],
            pretrained=path))
    model.init_weights()
    model.eval()
    with torch.no_grad():
        feats = model(reference_input(1, *cfg['sizes']['other']))
    for feat, ref in zip(feats, ref_features('swiglu', 'other')):
        torch.testing.assert_close(feat, ref, atol=ATOL, rtol=RTOL)


def load_convert_tool():
    spec = importlib.util.spec_from_file_location(
        'convert_dinov2', osp.join(REPO, 'tools', 'model_converters',
                                 'dinov2_to_mmseg_uda.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_convert_cli_output_loads_and_matches(tmp_path, capsys):
    src, dst = str(tmp_path / 'official.pth'), str(tmp_path / 'conv.pth')
    torch.save(official_state('mlp'), src)
    tool = load_convert_tool()
    assert tool.main([src, dst, '--arch', json.dumps(tiny_arch('mlp'))]) == 0
    saved = torch.load(dst, weights_only=True)
    assert saved['meta']['patch_size'] == 14
    assert saved['meta']['img_size'] == 518
    cfg = META['configs']['mlp']
    model = DINOv2VisionTransformer(
        arch=tiny_arch('mlp'), out_indices=cfg['n'], pretrained=dst)
    model.init_weights()
    with torch.no_grad():
        feats = model.eval()(reference_input(1, 224, 308))
    for feat, ref in zip(feats, ref_features('mlp', 'other')):
        torch.testing.assert_close(feat, ref, atol=ATOL, rtol=RTOL)
    # a mismatching arch is refused with exit status 1 and named keys;
    # a width no released model has asks for --arch
    capsys.readouterr()
    assert tool.main([src, dst, '--arch', 'small']) == 1
    assert 'expected (1, 1, 384) found (1, 1, 16)' in capsys.readouterr().err
    assert tool.main([src, dst]) == 1
    assert 'give --arch' in capsys.readouterr().err


def test_convert_cli_runs_as_script(tmp_path):
    """The CLI entry point works from a shell (one subprocess)."""
    src, dst = str(tmp_path / 'official.pth'), str(tmp_path / 'conv.pth')
    torch.save(official_state('swiglu'), src)
    run = subprocess.run(
        [sys.executable, 'tools/model_converters/dinov2_to_mmseg_uda.py',
         src, dst, '--arch',
         json.dumps(tiny_arch('swiglu'))],
        cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "pretrained='" in run.stdout


# ------------------------------------------------------- released archs
@pytest.mark.parametrize('arch,layers,dims,indices', [
    ('small', 12, 384, (2, 5, 8, 11)),
    ('base', 12, 768, (2, 5, 8, 11)),
    ('large', 24, 1024, (5, 11, 17, 23)),
    ('giant', 40, 1536, (9, 19, 29, 39)),
])
def test_released_arch_shapes_on_meta(arch, layers, dims, indices):
    """Each released arch (on the meta device: no memory, no compute) has
    the official parameter count, default out_indices and output shapes."""
    with torch.device('meta'):
        model = DINOv2VisionTransformer(arch=arch)
        outs = model(torch.empty(2, 3, 518, 518))
        outs_other = model(torch.empty(1, 3, 224, 308))
    assert model.out_indices == indices
    assert len(model.dinov2.encoder.layer) == layers
    assert [tuple(o.shape) for o in outs] == [(2, dims, 37, 37)] * 4
    assert [tuple(o.shape) for o in outs_other] == [(1, dims, 16, 22)] * 4
    official = META['official_key_shapes'][arch]
    n_params = sum(math.prod(s) for s in official.values())
    assert sum(p.numel() for p in model.parameters()) == n_params


@pytest.mark.parametrize('arch', ['small', 'base', 'large', 'giant'])
def test_official_key_mapping_is_complete(arch):
    """Every key of the released checkpoint maps to a backbone key, every
    backbone key is filled, and all shapes agree (official key lists
    recorded from the official code)."""
    official = {k: tuple(v) for k, v in
                META['official_key_shapes'][arch].items()}
    assert official_key_shapes(arch) == official
    converted = convert_dinov2_official(meta_state_dict(official))
    with torch.device('meta'):
        model = DINOv2VisionTransformer(arch=arch)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    model.check_state_dict(converted)  # does not raise
    assert guess_official_arch(meta_state_dict(official)) == arch


def test_released_file_into_wrong_arch_suggests_arch():
    shapes = META['official_key_shapes']['small']
    small = convert_dinov2_official(
        meta_state_dict({k: tuple(v) for k, v in shapes.items()}))
    with torch.device('meta'):
        base = DINOv2VisionTransformer(arch='base')
    with pytest.raises(ValueError) as err:
        base.check_state_dict(small, 'dinov2_vits14_pretrain.pth')
    msg = str(err.value)
    assert "set arch='small'" in msg
    assert 'dinov2.embeddings.cls_token expected (1, 1, 768) found ' \
           '(1, 1, 384)' in msg
    assert 'dinov2_vits14_pretrain.pth' in msg


def test_arch_aliases():
    for alias in ('s', 'vits14', 'vit_small', 'dinov2_vits14', 'SMALL'):
        with torch.device('meta'):
            assert DINOv2VisionTransformer(arch=alias).arch_name == 'small'
    with pytest.raises(ValueError, match='unknown arch'):
        DINOv2VisionTransformer(arch='huge')
    with pytest.raises(ValueError, match='mlp_ratio must be an integer'):
        DINOv2VisionTransformer(arch=dict(TINY, mlp_ratio=2.5))


# --------------------------------------------------------- strict loading
def save_official(tmp_path, state):
    path = str(tmp_path / 'dinov2_vitt14_pretrain.pth')
    torch.save(state, path)
    return path


def test_load_wrong_arch_names_file_key_shapes(tmp_path):
    path = save_official(tmp_path, official_state('mlp'))
    model = DINOv2VisionTransformer(
        arch=dict(embed_dims=32, num_layers=4, num_heads=2), pretrained=path)
    with pytest.raises(ValueError) as err:
        model.init_weights()
    msg = str(err.value)
    assert path in msg
    assert 'dinov2.embeddings.cls_token expected (1, 1, 32) found ' \
           '(1, 1, 16)' in msg
    assert 'tools/model_converters/dinov2_to_mmseg_uda.py' in msg


def test_load_wrong_patch_and_grid_say_what_to_set(tmp_path):
    path = save_official(tmp_path, official_state('mlp'))
    model = DINOv2VisionTransformer(
        arch=tiny_arch('mlp'), patch_size=16, img_size=512, pretrained=path)
    with pytest.raises(ValueError) as err:
        model.init_weights()
    msg = str(err.value)
    assert 'dinov2.embeddings.patch_embeddings.projection.weight expected ' \
           '(16, 3, 16, 16) found (16, 3, 14, 14)' in msg
    assert 'set patch_size=14' in msg
    model = DINOv2VisionTransformer(
        arch=tiny_arch('mlp'), img_size=224, pretrained=path)
    with pytest.raises(ValueError, match='set img_size=518'):
        model.init_weights()


def test_load_missing_unknown_and_register_keys(tmp_path):
    state = official_state('mlp')
    del state['blocks.1.ls1.gamma']
    model = DINOv2VisionTransformer(
        arch=tiny_arch('mlp'), pretrained=save_official(tmp_path, state))
    with pytest.raises(ValueError,
                       match='missing: dinov2.encoder.layer.1.layer_scale1'):
        model.init_weights()

    state = dict(official_state('mlp'), **{'blocks.0.attn.bogus': 1})
    state['blocks.0.attn.bogus'] = torch.zeros(1)
    with pytest.raises(DINOv2ConversionError, match='blocks.0.attn.bogus'):
        convert_dinov2_official(state)
    model = DINOv2VisionTransformer(
        arch=tiny_arch('mlp'), pretrained=save_official(tmp_path, state))
    with pytest.raises(ValueError, match='blocks.0.attn.bogus'):
        model.init_weights()

    state = dict(official_state('mlp'), register_tokens=torch.zeros(1, 4, 16))
    with pytest.raises(DINOv2ConversionError, match='register tokens'):
        convert_dinov2_official(state)


def test_load_missing_file_and_not_a_state_dict(tmp_path):
    model = DINOv2VisionTransformer(
        arch=TINY, pretrained=str(tmp_path / 'nope.pth'))
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        model.init_weights()
    path = str(tmp_path / 'other.pth')
    torch.save({'conv.weight': torch.zeros(1)}, path)
    model = DINOv2VisionTransformer(arch=TINY, pretrained=path)
    with pytest.raises(ValueError, match='neither official DINOv2 keys'):
        model.init_weights()


def test_init_cfg_prefix_loads_backbone_of_segmentor_checkpoint(tmp_path):
    source = tiny(out_indices=[3])
    with torch.no_grad():
        source.mask_token.normal_()
    path = str(tmp_path / 'segmentor.pth')
    state = {'backbone.' + k: v for k, v in source.state_dict().items()}
    state['decode_head.conv_seg.weight'] = torch.zeros(2, 32, 1, 1)
    torch.save({'state_dict': state, 'meta': {}}, path)
    model = tiny(init_cfg=dict(
        type='Pretrained', checkpoint=path, prefix='backbone.'))
    model.init_weights()
    assert torch.equal(model.mask_token, source.mask_token)
    with pytest.raises(ValueError, match='supports only init_cfg'):
        tiny(init_cfg=dict(type='Kaiming')).init_weights()


def test_deepcopy_for_ema_teacher():
    """UDA teachers are deep copies: same outputs, separate parameters."""
    import copy
    model = tiny().eval()
    teacher = copy.deepcopy(model)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x)[0], teacher(x)[0])
        teacher.mask_token.add_(1)
    assert not torch.equal(model.mask_token, teacher.mask_token)


def test_chunked_official_keys_convert():
    """block_chunks > 0 files (blocks.<chunk>.<i>.*) map like flat ones."""
    flat = official_state('mlp')
    chunked = {}
    for k, v in flat.items():
        if k.startswith('blocks.'):
            i = int(k.split('.')[1])
            k = f'blocks.{i // 2}.{i}.' + k.split('.', 2)[2]
        chunked[k] = v
    a, b = convert_dinov2_official(flat), convert_dinov2_official(chunked)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------ token mask
def manual_masked_forward(model, x, mask):
    """Brute force: official prepare_tokens_with_masks, then the blocks."""
    emb = model.dinov2.embeddings
    tokens = emb.patch_embeddings(x)
    tokens = torch.where(mask.flatten(1).unsqueeze(-1),
                         emb.mask_token.unsqueeze(0), tokens)
    tokens = torch.cat([emb.cls_token.expand(len(x), -1, -1), tokens], 1)
    tokens = tokens + emb.interpolate_pos_encoding(tokens, *x.shape[-2:])
    for layer in model.dinov2.encoder.layer:
        tokens = layer(tokens)
    tokens = model.dinov2.layernorm(tokens)[:, 1:]
    gh, gw = mask.shape[1:]
    return tokens.reshape(len(x), gh, gw, -1).permute(0, 3, 1, 2)


def test_token_mask_replaces_exactly_masked_tokens():
    model = tiny(out_indices=[0, 3]).eval()
    with torch.no_grad():
        model.mask_token.normal_()
    x = torch.randn(2, 3, 48, 64)
    assert model.token_grid(48, 64) == (6, 8)
    mask = torch.rand(2, 6, 8, generator=torch.Generator().manual_seed(1)) \
        < 0.4
    with torch.no_grad():
        plain = model(x)
        model.set_token_mask(mask)
        masked = model(x)
        again = model(x)  # the mask was consumed
        brute = manual_masked_forward(model, x, mask)
    torch.testing.assert_close(masked[1], brute, atol=1e-6, rtol=1e-6)
    for a, b in zip(again, plain):
        assert torch.equal(a, b)
    # the token embeddings differ exactly at the masked positions (after the
    # blocks every token differs: attention mixes them)
    with torch.no_grad():
        emb_plain = model.dinov2.embeddings(x)
        emb_masked = model.dinov2.embeddings(
            x, bool_masked_pos=mask.flatten(1))
    changed = (emb_plain - emb_masked)[:, 1:].abs().amax(-1) > 0
    assert torch.equal(changed, mask.flatten(1))
    assert torch.equal(emb_plain[:, 0], emb_masked[:, 0])  # class token
    assert not torch.equal(masked[1], plain[1])


def test_token_mask_errors_and_consumption():
    model = tiny().eval()
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match='bool tensor'):
        model.set_token_mask(torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match='bool tensor'):
        model.set_token_mask(torch.zeros(8, 8, dtype=torch.bool))
    model.set_token_mask(torch.zeros(1, 7, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match=r'expected \(1, 8, 8\)'):
        model(x)
    model(x)  # consumed even though that forward raised
    model.set_token_mask(torch.ones(1, 8, 8, dtype=torch.bool))
    model.set_token_mask(None)
    with torch.no_grad():
        assert torch.equal(model(x)[0], model(x)[0])
    assert DINOv2VisionTransformer.supports_token_mask is True


# ------------------------------------------------ padding and input scale
def test_pad_to_patch_pads_right_bottom():
    model = tiny().eval()
    x = torch.randn(1, 3, 60, 50)
    assert model.token_grid(60, 50) == (8, 7)
    with torch.no_grad():
        out = model(x)
        ref = model(F.pad(x, (0, 6, 0, 4)))
    assert out[0].shape == (1, 32, 8, 7)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b)
    strict = tiny(pad_to_patch=False)
    with pytest.raises(ValueError, match=r'60x50.*pad_to_patch'):
        strict(x)
    with pytest.raises(ValueError, match='pad_to_patch'):
        strict.token_grid(60, 50)


def test_input_scale_follows_vfm_uda_rounding():
    # VFM-UDA: a 1024 crop at scale 1.1 -> (1024 * 1.1) // 14 * 14 = 1120
    with torch.device('meta'):
        big = DINOv2VisionTransformer(arch='small', input_scale=1.1)
    assert big.token_grid(1024, 1024) == (80, 80)
    assert big.token_grid(512, 1024) == (40, 80)
    model = tiny(input_scale=1.5).eval()
    x = torch.randn(1, 3, 64, 40)
    assert model.token_grid(64, 40) == (12, 7)  # 96 x 56 pixels
    plain = tiny().eval()
    with torch.no_grad():
        out = model(x)
        ref = plain(
            F.interpolate(x, (96, 56), mode='bilinear', align_corners=False))
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------- training
def test_gradient_checkpointing_same_gradients():
    """with_cp recomputes the blocks in backward (replaying the drop-path
    randomness) and gives the gradients of the plain model."""
    x = torch.randn(4, 3, 32, 48)
    grads, calls = [], []
    for with_cp, seed in ((False, 3), (True, 3), (False, 4)):
        model = tiny(with_cp=with_cp, drop_path_rate=0.5).train()
        count = [0]
        model.dinov2.encoder.layer[1].mlp.register_forward_hook(
            lambda *a, c=count: c.__setitem__(0, c[0] + 1))
        torch.manual_seed(seed)
        loss = sum(f.square().mean() for f in model(x))
        loss.backward()
        calls.append(count[0])
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()
                      if p.grad is not None})
    assert calls == [1, 2, 1]  # the checkpointed block is recomputed
    # control: other drop-path draws give other gradients
    assert not torch.allclose(grads[2]['dinov2.layernorm.weight'],
                              grads[0]['dinov2.layernorm.weight'])
    assert grads[0].keys() == grads[1].keys()
    # every parameter is in the graph (DDP without find_unused_parameters);
    # the mask token, unused without a mask, gets an exact zero gradient
    assert len(grads[0]) == len(list(model.parameters()))
    assert torch.count_nonzero(grads[0]['dinov2.embeddings.mask_token']) == 0
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name],
                                   atol=1e-6, rtol=1e-5)


def test_unused_parameters_are_frozen_and_mask_token_trains():
    model = tiny(out_indices=[1], final_norm=False).train()
    layers = model.dinov2.encoder.layer
    assert all(p.requires_grad for p in layers[1].parameters())
    assert not any(p.requires_grad for p in layers[2:].parameters())
    assert not any(p.requires_grad
                   for p in model.dinov2.layernorm.parameters())
    assert len(model.state_dict()) == len(tiny().state_dict())
    x = torch.randn(2, 3, 32, 32)
    model.set_token_mask(torch.ones(2, 4, 4, dtype=torch.bool))
    model(x)[0].square().mean().backward()
    assert model.mask_token.grad.abs().sum() > 0
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trainable)


def test_drop_path_rates_follow_official_linspace():
    model = tiny(drop_path_rate=0.3)
    rates = [getattr(layer.drop_path, 'drop_prob', 0.0)
             for layer in model.dinov2.encoder.layer]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])
    uniform = tiny(drop_path_rate=0.3, drop_path_uniform=True)
    assert [layer.drop_path.drop_prob
            for layer in uniform.dinov2.encoder.layer] == [0.3] * 4
    model.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x)[0], model(x)[0])  # identity in eval


def test_encoder_decoder_with_feature2pyramid_and_daformer_head():
    import mmseg_uda.models.decode_heads  # noqa: F401 (registers)
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    torch.manual_seed(0)
    bn = dict(type='BN', requires_grad=True)
    model = MODELS.build(
        dict(
            type='EncoderDecoder',
            data_preprocessor=dict(type='SegDataPreProcessor'),
            backbone=dict(
                type='DINOv2VisionTransformer',
                arch=TINY,
                patch_size=8,
                img_size=64,
                drop_path_rate=0.1),
            neck=dict(
                type='Feature2Pyramid',
                embed_dim=32,
                rescales=[4, 2, 1, 0.5],
                norm_cfg=bn),
            decode_head=dict(
                type='DAFormerHead',
                in_channels=[32, 32, 32, 32],
                in_index=[0, 1, 2, 3],
                channels=16,
                embed_dims=16,
                dropout_ratio=0.1,
                num_classes=5,
                norm_cfg=bn,
                align_corners=False,
                loss_decode=dict(
                    type='CrossEntropyLoss', use_sigmoid=False,
                    loss_weight=1.0)),
            train_cfg=dict(),
            test_cfg=dict(mode='whole')))
    model.init_weights()
    x = torch.randn(2, 3, 64, 64)
    feats = model.extract_feat(x)
    assert [tuple(f.shape) for f in feats] == [(2, 32, 32, 32),
                                               (2, 32, 16, 16),
                                               (2, 32, 8, 8), (2, 32, 4, 4)]
    samples = []
    for _ in range(2):
        s = SegDataSample(metainfo=dict(img_shape=(64, 64),
                                        ori_shape=(64, 64),
                                        pad_shape=(64, 64)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 5, (1, 64, 64)))
        samples.append(s)
    losses = model.loss(x, samples)
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    loss.backward()
    proj = model.backbone.dinov2.embeddings.patch_embeddings.projection
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        logits = model(x, mode='tensor')
    assert logits.shape == (2, 5, 32, 32)  # stride 2: patch 8, rescale 4


# -------------------------------------------------------------------- DDP
def _ddp_worker(rank, world_size, out_dir):
    from torch.nn.parallel import DistributedDataParallel as DDP
    results = {}
    for case in ('as_built', 'unused_norm_trainable'):
        torch.manual_seed(0)
        model = tiny(final_norm=False)
        if case == 'unused_norm_trainable':  # negative control
            model.dinov2.layernorm.requires_grad_(True)
        ddp = DDP(model.train(), find_unused_parameters=False)
        g = torch.Generator().manual_seed(rank)
        try:
            for step in range(3):  # no mask, mask, no mask
                if step == 1:
                    model.set_token_mask(
                        torch.rand(2, 4, 4, generator=g) < 0.5)
                feats = ddp(torch.randn(2, 3, 32, 32, generator=g))
                sum(f.mean() for f in feats).backward()
            results[case] = 'ok'
        except RuntimeError as err:
            results[case] = str(err)[:200]
    with open(osp.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(results, f)


def test_ddp_without_find_unused_parameters(tmp_path):
    """Steps with and without a token mask train under DDP with
    find_unused_parameters=False; a trainable unused parameter (negative
    control) makes DDP fail, so the test can tell."""
    from dist_utils import run_distributed
    run_distributed(_ddp_worker, 2, str(tmp_path))
    for rank in range(2):
        with open(tmp_path / f'rank{rank}.json') as f:
            results = json.load(f)
        assert results['as_built'] == 'ok'
        assert results['unused_norm_trainable'] != 'ok'
