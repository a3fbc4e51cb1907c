"""StyleAugmentor (Jackson et al., CVPRW 2019), T2S-DA's style engine:
golden outputs of the upstream network, strict loading of the upstream
checkpoint format, the shipped embedding statistics, geometry, mixing,
frozen evaluation and the global-batch numbering of the style draws.

The golden fixture ``fixtures/style_augmentor_golden.pt`` holds outputs of
upstream's own code (philipjackson/style-augmentation @ 0273e2e, identical
to Haochen-Wang409/StypeTransfer @ fd8e847) on random weights made by
:func:`recipe_random_state_dict`; its provenance is in
``fixtures/style_augmentor_golden.md``. Inputs are regenerated here from
their seeds.
"""
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config

from mmseg_uda.models.utils import style_augmentor as sa
from mmseg_uda.models.utils.style_augmentor import (
    GhiasiStyleTransformer, InceptionStylePredictor,
    StyleAugmentorStyleTransfer, load_embedding_statistics,
    recipe_random_state_dict)
from mmseg_uda.registry import MODELS

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(HERE)
GOLDEN = osp.join(HERE, 'fixtures', 'style_augmentor_golden.pt')


@pytest.fixture(scope='module')
def golden():
    return torch.load(GOLDEN, weights_only=True)


@pytest.fixture(scope='module')
def golden_inputs():
    """x (2×3×64×96, rand seed 0), ε (2×100, randn seed 1), x_odd
    (1×3×62×94, rand seed 2): the fixture's inputs."""
    return dict(
        x=torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0)),
        eps=torch.randn(2, 100, generator=torch.Generator().manual_seed(1)),
        x_odd=torch.rand(1, 3, 62, 94,
                         generator=torch.Generator().manual_seed(2)))


@pytest.fixture(scope='module')
def synthetic_embeddings(golden, tmp_path_factory):
    """The fixture's synthetic statistics in upstream's file format
    (float32 mean, float64 covariance and ImageNet mean)."""
    path = tmp_path_factory.mktemp('emb') / 'checkpoint_embeddings.pth'
    torch.save(
        dict(pbn_embedding_mean=golden['pbn_mean'],
             pbn_embedding_covariance=golden['pbn_cov'],
             imagenet_embedding_mean=golden['imagenet_mean']), path)
    return str(path)


@pytest.fixture(scope='module')
def engine(synthetic_embeddings):
    return StyleAugmentorStyleTransfer(
        random_weights=True, embeddings_ckpt=synthetic_embeddings)


@pytest.fixture(scope='module')
def augmented(engine, golden_inputs):
    """engine.augment(x, ε) once for the tests that compare with it."""
    return engine.augment(golden_inputs['x'], golden_inputs['eps'])


@pytest.fixture(scope='module')
def transformer_only(synthetic_embeddings):
    """An engine whose (1 − α) term is zero: only the transformer runs
    (geometry and numbering tests, cheaper on a CPU)."""
    return StyleAugmentorStyleTransfer(
        random_weights=True, embeddings_ckpt=synthetic_embeddings,
        base_embedding='zero')


class configured:
    """Temporarily set attributes of the shared engine."""

    def __init__(self, engine, **attrs):
        self.engine, self.attrs = engine, attrs

    def __enter__(self):
        self.saved = {k: getattr(self.engine, k) for k in self.attrs}
        for k, v in self.attrs.items():
            setattr(self.engine, k, v)
        return self.engine

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            setattr(self.engine, k, v)


@pytest.fixture(scope='module')
def upstream_files(engine, tmp_path_factory):
    """The engine's random weights saved in upstream's checkpoint format
    (legacy, pre-1.6 serialisation like the 2019 files)."""
    folder = tmp_path_factory.mktemp('ckpt')
    paths = {}
    for what, net, key in (('transformer', engine.transformer,
                            'state_dict_ghiasi'),
                           ('predictor', engine.predictor,
                            'state_dict_stylepredictor')):
        paths[what] = str(folder / sa.UPSTREAM_FILES[what][0])
        torch.save({key: net.state_dict()}, paths[what],
                   _use_new_zipfile_serialization=False)
    return paths


def max_abs(a, b):
    return float((a - b).abs().max())


# ------------------------------------------------------------------ layout
def test_state_dicts_have_the_upstream_key_layout(golden):
    transformer = GhiasiStyleTransformer()
    predictor = InceptionStylePredictor()
    t_sd, p_sd = transformer.state_dict(), predictor.state_dict()
    # key lists and order recorded from upstream's Ghiasi / StylePredictor
    assert list(t_sd) == list(golden['transformer_weight_sums'])
    assert list(p_sd) == list(golden['predictor_weight_sums'])
    assert (len(t_sd), len(p_sd)) == (84, 422)
    assert sum(p.numel() for p in transformer.parameters()) == 1_954_593
    assert sum(p.numel() for p in predictor.parameters()) == 9_042_756
    shapes = {k: tuple(v.shape) for k, v in {**t_sd, **p_sd}.items()}
    assert shapes['layers.0.conv.weight'] == (32, 3, 9, 9)
    assert shapes['layers.5.fc_gamma2.weight'] == (128, 100)
    assert shapes['layers.10.fc_beta.weight'] == (3, 100)
    assert shapes['Mixed_6e.branch7x7dbl_5.conv.weight'] == (192, 192, 1, 7)
    assert shapes['Mixed_6a.branch3x3.conv.weight'] == (384, 288, 3, 3)
    assert shapes['fc.weight'] == (100, 768)


def test_random_weight_recipe_matches_the_fixture(golden):
    """The regenerated weights equal those upstream was run with."""
    for net, key in ((GhiasiStyleTransformer(), 'transformer_weight_sums'),
                     (InceptionStylePredictor(), 'predictor_weight_sums')):
        sums = golden[key]
        for name, value in recipe_random_state_dict(net).items():
            assert float(value.double().sum()) == pytest.approx(
                sums[name], rel=1e-6, abs=1e-6), name


# ------------------------------------------------------------------ golden
def test_golden_transformer(engine, golden, golden_inputs):
    with torch.no_grad():
        y = engine.transformer(golden_inputs['x'], golden['emb'])
        y_odd = engine.transformer(golden_inputs['x_odd'], golden['emb'][:1])
    assert max_abs(y, golden['y']) < 1e-5
    # upstream geometry: 62×94 -> 4⌈H/4⌉×4⌈W/4⌉ = 64×96
    assert y_odd.shape == (1, 3, 64, 96)
    assert max_abs(y_odd, golden['y_odd']) < 1e-5


def test_golden_predictor(engine, golden, golden_inputs):
    x = golden_inputs['x']
    with torch.no_grad():
        base = engine.predictor(x)
        base255 = engine.predictor(255 * x)  # StypeTransfer demo's 0-255
    assert max_abs(base, golden['base']) < 1e-5
    scale = float(golden['base255'].abs().max())
    assert max_abs(base255, golden['base255']) / scale < 1e-5
    # net per-channel map of upstream's two steps: R, G -> 2x - 1 (Google's
    # Inception range); blue keeps upstream's 0.255 typo (0.225 would give
    # 2x - 1 too): 0.225/0.255/0.5·x + ... = 1.764706·x - 0.904471
    pre = engine.predictor.preprocess(x)
    assert max_abs(pre[:, :2], 2 * x[:, :2] - 1) < 1e-5
    assert max_abs(pre[:, 2], 1.764706 * x[:, 2] - 0.904471) < 1e-5


def test_golden_full_augmentor_with_a_fixed_style_draw(engine, golden,
                                                       golden_inputs,
                                                       augmented):
    x, eps = golden_inputs['x'], golden_inputs['eps']
    # ε from the package's generator = upstream's torch.manual_seed(1) draw
    assert torch.equal(
        engine.sample_parameters(2, (64, 96),
                                 torch.Generator().manual_seed(1)), eps)
    assert max_abs(engine.random_style(eps), golden['z']) < 1e-5
    # upstream forward(x) after torch.manual_seed(1)
    assert max_abs(augmented, golden['y']) < 1e-5
    # through the package interface: 0..255 BGR pixels in, 0..255 BGR out
    out = engine.stylise(255 * x[:1].flip(1), params=eps[:1], rgb=False)
    assert max_abs(out.flip(1) / 255, golden['y'][:1]) < 1e-5


# ------------------------------------------------------- strict loading
def test_upstream_files_load_strictly(engine, upstream_files,
                                      synthetic_embeddings, golden,
                                      golden_inputs):
    loaded = StyleAugmentorStyleTransfer(
        transformer_ckpt=upstream_files['transformer'],
        predictor_ckpt=upstream_files['predictor'],
        embeddings_ckpt=synthetic_embeddings)
    assert loaded.loaded == dict(transformer=84, predictor=422)
    y = loaded.augment(golden_inputs['x'][:1], golden_inputs['eps'][:1])
    assert max_abs(y, golden['y'][:1]) < 1e-5


def _save_variant(tmp_path, what, state, name='variant.pth'):
    key = sa.UPSTREAM_FILES[what][1]
    path = str(tmp_path / name)
    torch.save({key: state}, path)
    return path


@pytest.mark.parametrize('what', ['transformer', 'predictor'])
def test_loader_accepts_module_prefix_and_old_bn_files(engine, tmp_path,
                                                       what):
    net = getattr(engine, what)
    state = {f'module.{k}': v for k, v in net.state_dict().items()
             if not k.endswith('num_batches_tracked')}
    path = _save_variant(tmp_path, what, state)
    fresh = type(net)()
    count = sa.load_upstream_weights(fresh, path, what)
    assert count == (84 if what == 'transformer' else 422 - 70)
    for k, v in net.state_dict().items():
        if not k.endswith('num_batches_tracked'):
            assert torch.equal(fresh.state_dict()[k], v), k


@pytest.mark.parametrize('what', ['transformer', 'predictor'])
@pytest.mark.parametrize('change', ['extra', 'missing', 'shape'])
def test_loader_rejects_partial_or_wrong_files(engine, tmp_path, what,
                                               change):
    net = getattr(engine, what)
    state = dict(net.state_dict())
    first = next(iter(state))
    if change == 'extra':
        state['layers.11.conv.weight'] = torch.zeros(1)
        word, name = 'unexpected', 'layers.11.conv.weight'
    elif change == 'missing':
        del state[first]
        word, name = 'missing', first
    else:
        state[first] = torch.zeros(2, 2)
        word, name = 'shape mismatch', first
    path = _save_variant(tmp_path, what, state)
    with pytest.raises(ValueError) as err:
        sa.load_upstream_weights(type(net)(), path, what)
    msg = str(err.value)
    assert path in msg and word in msg and name in msg
    assert sa.UPSTREAM_URL in msg and sa.UPSTREAM_FILES[what][0] in msg


def test_loader_errors_name_the_file_and_where_to_get_it(upstream_files,
                                                         tmp_path):
    # the predictor file given as the transformer: every key is wrong
    with pytest.raises(ValueError, match='state_dict_ghiasi'):
        StyleAugmentorStyleTransfer(
            transformer_ckpt=upstream_files['predictor'],
            predictor_ckpt=upstream_files['predictor'])
    missing = str(tmp_path / 'nope.pth')
    with pytest.raises(FileNotFoundError) as err:
        StyleAugmentorStyleTransfer(
            transformer_ckpt=missing,
            predictor_ckpt=upstream_files['predictor'])
    assert missing in str(err.value) and sa.UPSTREAM_URL in str(err.value)
    assert 'checkpoint_transformer.pth' in str(err.value)
    with pytest.raises(ValueError, match='predictor_ckpt is None'):
        StyleAugmentorStyleTransfer(transformer_ckpt=missing)


class _Pickled:
    """Not a tensor: makes the file need full unpickling."""


def test_loader_refuses_arbitrary_pickles_unless_trusted(engine, tmp_path):
    state = engine.transformer.state_dict()
    path = str(tmp_path / 'pickled.pth')
    torch.save({'state_dict_ghiasi': state, 'extra': _Pickled()}, path)
    with pytest.raises(RuntimeError, match='trusted_checkpoints=True'):
        sa.load_upstream_weights(GhiasiStyleTransformer(), path,
                                 'transformer')
    assert sa.load_upstream_weights(GhiasiStyleTransformer(), path,
                                    'transformer', trusted=True) == 84


# --------------------------------------------------- embedding statistics
def test_shipped_embedding_statistics_are_upstreams():
    """The packaged file is upstream's checkpoint_embeddings.pth (sha256),
    with the values measured on upstream's file."""
    assert sa.file_sha256(sa.PACKAGED_EMBEDDINGS) == \
        sa.PACKAGED_EMBEDDINGS_SHA256
    raw = torch.load(sa.PACKAGED_EMBEDDINGS, weights_only=True)
    mean, cov = raw['pbn_embedding_mean'], raw['pbn_embedding_covariance']
    assert mean.dtype == torch.float32 and cov.dtype == torch.float64
    assert float(mean.sum()) == pytest.approx(2.235098, abs=1e-5)
    assert float(mean.norm()) == pytest.approx(1.776792, abs=1e-5)
    assert float(torch.trace(cov)) == pytest.approx(2.194949, abs=1e-5)
    assert float(cov.norm()) == pytest.approx(0.758475, abs=1e-5)
    imnet = raw['imagenet_embedding_mean']
    assert float(imnet.sum()) == pytest.approx(1.448092, abs=1e-5)
    stats = load_embedding_statistics()
    a = stats['sqrt_cov'].double()
    assert all(v.dtype == torch.float32 for v in stats.values())
    assert max_abs(a @ a.t(), cov) < 1e-6


def test_style_samples_follow_the_fitted_normal(golden,
                                                synthetic_embeddings):
    stats = load_embedding_statistics(synthetic_embeddings)
    eps = torch.randn(200_000, 100, generator=torch.Generator().manual_seed(0))
    z = (eps @ stats['sqrt_cov'].t() + stats['mean']).double()
    assert max_abs(z.mean(0), golden['pbn_mean'].double()) < 0.01
    assert max_abs(torch.cov(z.t()), golden['pbn_cov']) < 0.01


def test_wrong_embedding_file_fails_clearly(tmp_path):
    path = str(tmp_path / 'emb.pth')
    torch.save(dict(pbn_embedding_mean=torch.zeros(100)), path)
    with pytest.raises(ValueError, match='pbn_embedding_covariance'):
        load_embedding_statistics(path)


# ------------------------------------------------------- geometry / range
def _band_image(column, h=64, w=128):
    """Background 60/60/60 with a labelled 16-px vertical band."""
    img = torch.full((1, 3, h, w), 60.0)
    img[..., column:column + 16] = 200.0
    img[:, 1, :, column:column + 16] = 120.0
    label = torch.zeros(1, h, w, dtype=torch.long)
    label[..., column:column + 16] = 1
    return img, label


def test_stylised_image_keeps_the_label_geometry(transformer_only):
    """The stylised image is the transformer's output on the same pixel
    grid (golden test) and keeps its size; here the content moves with the
    label."""
    engine = transformer_only
    eps = torch.randn(1, 100, generator=torch.Generator().manual_seed(3))
    img, label = _band_image(48)
    out = engine.stylise(img, params=eps)
    assert out.shape == img.shape
    assert float(out.min()) >= 0 and float(out.max()) <= 255
    # the labelled band moved by 4 or 8 px (the network's stride): the
    # stylised band moves by exactly as many pixels ...
    for shift in (4, 8):
        moved, moved_label = _band_image(48 + shift)
        assert torch.equal(moved_label[..., shift:], label[..., :-shift])
        out_moved = engine.stylise(moved, params=eps)
        assert max_abs(out_moved[..., shift:], out[..., :-shift]) < 10
        # ... and not by 4 px more or less (negative control)
        for wrong in (shift - 4, shift + 4):
            a = out_moved[..., wrong:] if wrong else out_moved
            b = out[..., :-wrong] if wrong else out
            assert max_abs(a, b) > 50


def test_stylise_rejects_sizes_that_would_move_the_label(engine):
    eps = torch.zeros(1, 100)
    with pytest.raises(ValueError, match='multiples of 4'):
        engine.stylise(torch.zeros(1, 3, 62, 96), params=eps)
    with pytest.raises(ValueError, match='43x43'):
        engine.stylise(torch.zeros(1, 3, 40, 40), params=eps)
    with pytest.raises(ValueError, match='rows'):
        engine.stylise(torch.zeros(2, 3, 64, 64), params=eps)


def test_output_statistics_are_set_by_the_style(engine, golden_inputs):
    """Last layer = IN then CIN: per image and channel, the pre-sigmoid map
    has mean β₁₀(e) and std |γ₁₀(e)| (exact identity of the network); the
    transformer ignores a global affine change of the input."""
    x, eps = golden_inputs['x'][:1], golden_inputs['eps'][:1]
    style = engine.random_style(eps)
    with torch.no_grad():
        y = engine.transformer(x, style)
        last = engine.transformer.layers[10]
        beta, gamma = last.fc_beta(style), last.fc_gamma(style)
        y2 = engine.transformer(3 * x - 1, style)
        y3 = engine.transformer(x * torch.tensor([1, 2, 3.]).view(1, 3, 1, 1),
                                style)
    logit = torch.logit(y.double())
    assert max_abs(logit.mean((2, 3)), beta.double()) < 1e-3
    assert max_abs(logit.std((2, 3), unbiased=False),
                   gamma.abs().double()) < 1e-3
    assert max_abs(y2, y) < 1e-4
    assert max_abs(y3, y) > 1e-2


# ----------------------------------------------------------------- mixing
@pytest.mark.parametrize('alpha', [0.0, 1.0])
def test_alpha_mixing(engine, golden, golden_inputs, alpha):
    """α = 0: the image in its own predicted style; α = 1: pure random
    style."""
    x, eps = golden_inputs['x'][:1], golden_inputs['eps'][:1]
    style = golden['base'][:1] if alpha == 0 else golden['z'][:1]
    with torch.no_grad():
        expected = engine.transformer(x, style)
    with configured(engine, alpha=alpha):
        assert max_abs(engine.augment(x, eps), expected) < 1e-5


@pytest.mark.parametrize('base', ['imagenet_mean', 'zero'])
def test_base_embeddings_without_predictor(engine, golden, golden_inputs,
                                           base):
    x, eps = golden_inputs['x'][:1], golden_inputs['eps'][:1]
    ref = golden['imagenet_mean'].float() if base == 'imagenet_mean' \
        else torch.zeros(100)
    with torch.no_grad():
        expected = engine.transformer(x, 0.5 * golden['z'][:1] + 0.5 * ref)
    with configured(engine, base_embedding=base):
        y = engine.augment(x, eps)  # upstream fails here (float64 mix)
    assert y.dtype == torch.float32 and max_abs(y, expected) < 1e-5


def test_images_are_independent(engine, golden, golden_inputs):
    x, eps = golden_inputs['x'], golden_inputs['eps']
    y1 = engine.augment(x[1:], eps[1:])
    assert max_abs(y1, golden['y'][1:]) < 1e-5


# ----------------------------------------------------------------- frozen
def test_engine_is_frozen_and_outside_the_module_tree(engine, golden,
                                                      golden_inputs):
    assert not any(p.requires_grad for p in engine.transformer.parameters())
    assert not any(p.requires_grad for p in engine.predictor.parameters())
    t2s = MODELS.build(
        dict(type='T2S', num_classes=4, dg_mode=True,
             projection_head=dict(type='ProjectionHead', in_channels=8,
                                  hidden_channels=16, out_channels=8,
                                  norm_cfg=None),
             style=dict(type='StyleAugmentorStyleTransfer',
                        random_weights=True)))
    t2s.train()
    assert not any('Mixed' in k or 'layers.' in k for k in t2s.state_dict())
    params = {id(p) for p in t2s.parameters()}
    assert not params & {id(p) for p in t2s.style.predictor.parameters()}
    # train() on the owner (or on the predictor itself) does not switch
    # BatchNorm to batch statistics
    engine.predictor.train()
    before = engine.predictor.Conv2d_1a_3x3.bn.running_mean.clone()
    with torch.no_grad():
        embedding = engine.embed(golden_inputs['x'])
    assert max_abs(embedding, golden['base']) < 1e-5
    assert torch.equal(engine.predictor.Conv2d_1a_3x3.bn.running_mean,
                       before)


def test_building_does_not_consume_the_global_rng(synthetic_embeddings):
    torch.manual_seed(5)
    StyleAugmentorStyleTransfer(random_weights=True,
                                embeddings_ckpt=synthetic_embeddings)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(3), after)


# ----------------------------------------------- global-batch numbering
def _fake_context(images):
    """What ``T2S.stylise_source`` reads from a UDAContext (pixels are
    already 0..255 RGB: identity normalisation)."""
    return SimpleNamespace(
        img=lambda domain: images, inputs={'source': images},
        preprocessor=SimpleNamespace(channel_conversion=True),
        denormalize=lambda x: x, renormalize=lambda x: x)


def test_style_draws_follow_the_global_batch_numbering(monkeypatch):
    """Two ranks of the sampler's split (rank r holds global images
    g = i·2 + r) get, per global image, the style a single process holding
    the whole batch gives it (through ``T2S.stylise_source``)."""
    from mmseg_uda.models.uda import t2s as t2s_module
    from mmseg_uda.models.utils import global_batch
    t2s = MODELS.build(
        dict(type='T2S', num_classes=4,
             projection_head=dict(type='ProjectionHead', in_channels=8,
                                  hidden_channels=16, out_channels=8,
                                  norm_cfg=None),
             style=dict(type='StyleAugmentorStyleTransfer',
                        random_weights=True, base_embedding='zero')))
    images = torch.rand(4, 3, 32, 32,
                        generator=torch.Generator().manual_seed(7)) * 255
    single = t2s.stylise_source(_fake_context(images), t2s.generator(3))
    eps = t2s.style.sample_parameters(4, (32, 32), t2s.generator(3))
    assert max_abs(single, t2s.style.stylise(images, params=eps)) < 1e-2
    world = 2
    for rank in range(world):
        for module in (global_batch, t2s_module):
            monkeypatch.setattr(module, 'get_world_size', lambda: world,
                                raising=False)
            monkeypatch.setattr(module, 'get_rank', lambda r=rank: r,
                                raising=False)
        monkeypatch.setattr(global_batch, 'all_gather',
                            lambda t: [t.clone() for _ in range(world)])
        local = images[rank::world]  # g = i·W + r
        out = t2s.stylise_source(_fake_context(local), t2s.generator(3))
        assert max_abs(out, single[rank::world]) < 1e-2  # 0..255 scale
        # negative control: a rank-major (contiguous) split's rows differ
        contiguous = eps[rank * 2:(rank + 1) * 2]
        assert max_abs(t2s.style.stylise(local, params=contiguous), out) > 1
    monkeypatch.undo()
    # another iteration draws other styles
    assert not torch.equal(
        t2s.style.sample_parameters(4, (32, 32), t2s.generator(4)), eps)


# ---------------------------------------------------------------- configs
def _configs():
    return [osp.join(ROOT, 'configs', 't2s', f'{name}.py')
            for name in ('gta2cs', 'gta2cs_dg', 'gta2cs_dlv2', 'synthia2cs')]


@pytest.mark.parametrize('path', _configs())
def test_t2s_configs_use_style_augmentor_and_build(path, upstream_files):
    cfg = Config.fromfile(path)
    t2s = [m for m in cfg.model.methods if m['type'] == 'T2S'][0]
    style = dict(t2s['style'])
    assert style['type'] == 'StyleAugmentorStyleTransfer'
    assert (style['alpha'], style['base_embedding'],
            style['predictor_input_scale']) == (0.5, 'predictor', 1.0)
    assert style['transformer_ckpt'].endswith('checkpoint_transformer.pth')
    assert style['predictor_ckpt'].endswith('checkpoint_stylepredictor.pth')
    # the T2S method builds with the engine on upstream-format files
    style.update(transformer_ckpt=upstream_files['transformer'],
                 predictor_ckpt=upstream_files['predictor'])
    method = MODELS.build(dict(t2s, style=style))
    assert isinstance(method.style, StyleAugmentorStyleTransfer)
    assert method.style.loaded == dict(transformer=84, predictor=422)


def test_fda_ablation_config():
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 't2s', 'gta2cs_fda.py'))
    t2s = [m for m in cfg.model.methods if m['type'] == 'T2S'][0]
    assert t2s['style'] == dict(type='FDAStyleTransfer', beta=0.01)
    base = Config.fromfile(osp.join(ROOT, 'configs', 't2s', 'gta2cs.py'))
    base_t2s = [m for m in base.model.methods if m['type'] == 'T2S'][0]
    assert {k: v for k, v in t2s.items() if k != 'style'} == \
        {k: v for k, v in base_t2s.items() if k != 'style'}


def test_config_check_reports_missing_style_weights(upstream_files):
    from mmseg_uda.engine.config_checks import (ConfigError,
                                                check_pretrained,
                                                check_style_weights)
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 't2s', 'gta2cs.py'))
    model = cfg.model.to_dict()
    with pytest.raises(ConfigError) as err:
        check_style_weights(model)
    msg = str(err.value)
    assert 'checkpoint_transformer.pth' in msg
    assert 'model.methods.1.style.transformer_ckpt' in msg
    assert sa.UPSTREAM_URL in msg
    style = model['methods'][1]['style']
    # check_pretrained (what tools/train.py runs) includes the check
    only_t2s = dict(type='UDASegmentor', methods=[dict(type='T2S',
                                                       style=style)])
    with pytest.raises(ConfigError, match='checkpoint_transformer.pth'):
        check_pretrained(only_t2s)
    style.update(transformer_ckpt=upstream_files['transformer'])
    with pytest.raises(ConfigError, match='checkpoint_stylepredictor.pth'):
        check_style_weights(model)
    style.update(predictor_ckpt=upstream_files['predictor'])
    check_style_weights(model)  # present: no error
    check_pretrained(only_t2s)
    style.update(transformer_ckpt=None, predictor_ckpt=None,
                 random_weights=True)
    check_style_weights(model)
