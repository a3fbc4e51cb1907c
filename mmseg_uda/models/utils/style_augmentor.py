"""StyleAugmentor: style randomisation with a learned arbitrary-style
network, T2S-DA's style engine.

Jackson et al., "Style Augmentation: Data Augmentation via Style
Randomization", CVPR Workshops 2019 (official code: github.com/
philipjackson/style-augmentation, MIT licence, commit ``0273e2e``). The
first author of T2S-DA ships the same package in github.com/
Haochen-Wang409/StypeTransfer (commit ``fd8e847``), whose README says it is
the style transfer of "Pulling Target to Source". No target image is used.

For an RGB batch x in [0, 1] (Jackson et al., Sec. 3):

1. random style z = ε·Aᵀ + μ, ε ~ N(0, I₁₀₀), with μ and A = U·diag(√s)
   (SVD of Σ = U·diag(s)·Uᵀ) the mean and covariance of the style
   embeddings of the Painter-by-Numbers paintings (a multivariate normal
   fitted to them);
2. the image's own style b = P(x), P the Inception-v3 style predictor
   (Ghiasi et al., BMVC 2017, Sec. 3.2);
3. e = α·z + (1 − α)·b (Jackson et al., Eq. 2);
4. y = G(x, e), G the style transformer of Ghiasi et al. (Johnson et al.'s
   network whose instance norms take γ and β from e: conditional instance
   norm, Dumoulin et al., ICLR 2017, Eq. 5), ending in a sigmoid.

The networks here are written natively and keep the upstream parameter
names, so the upstream checkpoint files load strictly and unchanged
(:func:`load_upstream_weights`). Upstream behaviour reproduced on purpose:

* the predictor's preprocessing divides blue by 0.255 instead of 0.225
  (a typo in upstream's ImageNet normalisation that the released weights
  and embedding statistics were computed through);
* γ of every conditional norm has no "1 +" offset; no activation after the
  residual sums; the first three conv blocks take no style;
* the output is 4⌈H/4⌉ × 4⌈W/4⌉ (strided convs with reflection padding,
  then nearest ×2 upsampling), so only sizes that are multiples of 4 keep
  pixel alignment with the label (:meth:`StyleAugmentorStyleTransfer.
  stylise` requires them);
* ε is drawn as ``torch.randn(n, 100)`` and A from a float64 numpy SVD, so
  a generator seeded s reproduces upstream's draws after
  ``torch.manual_seed(s)``.

Deliberate differences: the predictor always runs in eval mode (upstream
leaves BatchNorm in training mode unless the caller calls ``.eval()``); the
ImageNet-mean base embedding is cast to float32 (upstream's float64 mix
fails in G's first linear layer); statistics are buffers that follow the
device.
"""
import hashlib
import os.path as osp
import pickle
import zlib
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmseg_uda.registry import MODELS
from .style_transfer import BaseStyleTransfer, _check_images

#: style embedding width (the bottleneck of the style predictor).
STYLE_DIM = 100

#: where users get the weight files.
UPSTREAM_URL = 'https://github.com/philipjackson/style-augmentation'
UPSTREAM_COMMIT = '0273e2e66a894d553c7466773802e09eae41f698'
#: file name, key of the state dict inside it, git blob id (the upstream
#: files are identical in Haochen-Wang409/StypeTransfer ``styles/``).
UPSTREAM_FILES = dict(
    transformer=('checkpoint_transformer.pth', 'state_dict_ghiasi',
                 '6cbd6a379ac2a2f2c39bb1c95f282ee6a81f9eef'),
    predictor=('checkpoint_stylepredictor.pth', 'state_dict_stylepredictor',
               '5406294bf41d364e80fa75a8c1b0b373df935378'),
    embeddings=('checkpoint_embeddings.pth', None,
                'ce01fabe62f113d76f49a60e39524cacd1330b06'))

#: the upstream embedding statistics shipped with the package (MIT,
#: byte-identical to ``styleaug/checkpoints/checkpoint_embeddings.pth`` at
#: UPSTREAM_COMMIT; see style_augmentor_data/README.md).
PACKAGED_EMBEDDINGS = osp.join(
    osp.dirname(__file__), 'style_augmentor_data', 'embedding_statistics.pt')
PACKAGED_EMBEDDINGS_SHA256 = \
    '796c625a43c2e29b77c2fd350ff29b4936950ab1e0b7d3515d7bdb824e3ec890'

BASE_EMBEDDINGS = ('predictor', 'imagenet_mean', 'zero')


# ---------------------------------------------------------------- transformer
def conditional_instance_norm(x: Tensor, gamma: Tensor,
                              beta: Tensor) -> Tensor:
    """γ(e)·IN(x) + β(e) (Dumoulin et al., ICLR 2017, Eq. 5; Ghiasi et
    al., Sec. 3.1), per image and channel, γ without a "1 +" offset.
    IN: biased variance, eps 1e-5, no affine parameters."""
    return gamma[:, :, None, None] * F.instance_norm(x, eps=1e-5) + \
        beta[:, :, None, None]


def _reflect_conv(cin: int, cout: int, kernel: int,
                  stride: int = 1) -> nn.Conv2d:
    # same numbers as ReflectionPad2d(k // 2) + Conv2d(padding=0)
    return nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2,
                     padding_mode='reflect')


class _ConvINReLU(nn.Module):
    """Encoder block: reflect-pad conv, instance norm, ReLU (no style:
    Magenta's ``nza_model`` normalises the first three layers without
    conditioning)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__()
        self.conv = _reflect_conv(cin, cout, kernel, stride)

    def forward(self, x: Tensor, style: Optional[Tensor] = None) -> Tensor:
        return F.relu(F.instance_norm(self.conv(x), eps=1e-5))


class _ConditionalResidualBlock(nn.Module):
    """x + CIN₂(conv₂(ReLU(CIN₁(conv₁(x))))) (Johnson et al.'s residual
    block with conditional instance norms; no activation after the sum)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = _reflect_conv(channels, channels, 3)
        self.fc_beta1 = nn.Linear(STYLE_DIM, channels)
        self.fc_gamma1 = nn.Linear(STYLE_DIM, channels)
        self.fc_beta2 = nn.Linear(STYLE_DIM, channels)
        self.fc_gamma2 = nn.Linear(STYLE_DIM, channels)
        self.conv2 = _reflect_conv(channels, channels, 3)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        y = conditional_instance_norm(
            self.conv1(x), self.fc_gamma1(style), self.fc_beta1(style))
        y = conditional_instance_norm(
            self.conv2(F.relu(y)), self.fc_gamma2(style),
            self.fc_beta2(style))
        return x + y


class _UpsampleConvCIN(nn.Module):
    """Decoder block: optional nearest ×2 upsampling, reflect-pad conv,
    conditional instance norm, optional ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, upsample: bool,
                 relu: bool):
        super().__init__()
        self.upsample = upsample
        self.relu = relu
        self.conv = _reflect_conv(cin, cout, kernel)
        self.fc_beta = nn.Linear(STYLE_DIM, cout)
        self.fc_gamma = nn.Linear(STYLE_DIM, cout)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode='nearest')
        x = conditional_instance_norm(
            self.conv(x), self.fc_gamma(style), self.fc_beta(style))
        return F.relu(x) if self.relu else x


class GhiasiStyleTransformer(nn.Module):
    """The style transformer G(x, e) of Ghiasi et al. (BMVC 2017, Sec. 3.1,
    Fig. 2) as ported by Jackson et al.: 9×9/3×3/3×3 encoder (strides
    1/2/2), five conditional residual blocks, two nearest-upsampling 3×3
    blocks and a 9×9 output block, sigmoid output in (0, 1).

    Parameter names equal upstream's ``Ghiasi`` (``layers.<i>.…``; 84
    state-dict entries, 1,954,593 parameters). Input RGB; the output is
    4⌈H/4⌉ × 4⌈W/4⌉.
    """

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(
            [_ConvINReLU(3, 32, 9), _ConvINReLU(32, 64, 3, stride=2),
             _ConvINReLU(64, 128, 3, stride=2)] +
            [_ConditionalResidualBlock(128) for _ in range(5)] + [
                _UpsampleConvCIN(128, 64, 3, upsample=True, relu=True),
                _UpsampleConvCIN(64, 32, 3, upsample=True, relu=True),
                _UpsampleConvCIN(32, 3, 9, upsample=False, relu=False)
            ])

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, style)
        return torch.sigmoid(x)


# ------------------------------------------------------------------ predictor
class _BasicConv2d(nn.Module):
    """Inception unit: conv (no bias), BatchNorm (eps 1e-3), ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool3(x: Tensor) -> Tensor:
    # 3×3, stride 1, pad 1, zeros counted in the mean (PyTorch's default)
    return F.avg_pool2d(x, 3, stride=1, padding=1)


class _InceptionA(nn.Module):
    """Inception-v3 35×35 module (Szegedy et al., CVPR 2016, Fig. 5):
    1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg-pool→1×1."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = _BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = _BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = _BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = _BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = _BasicConv2d(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool3(x))
        ], 1)


class _InceptionB(nn.Module):
    """Inception-v3 grid reduction 35→17 (Szegedy et al., Fig. 10):
    3×3/2 | 1×1→3×3→3×3/2 | max-pool 3×3/2."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = _BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = _BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2)
        ], 1)


class _InceptionC(nn.Module):
    """Inception-v3 17×17 module with factorised 7×7 convolutions
    (Szegedy et al., Fig. 6): 1×1 | 1×1→1×7→7×1 |
    1×1→7×1→1×7→7×1→1×7 | avg-pool→1×1."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = _BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = _BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = _BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = _BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _BasicConv2d(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        seven = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = x
        for i in range(1, 6):
            double = getattr(self, f'branch7x7dbl_{i}')(double)
        return torch.cat([
            self.branch1x1(x), seven, double,
            self.branch_pool(_avg_pool3(x))
        ], 1)


#: upstream predictor preprocessing, per RGB channel, in upstream's order:
#: (x − m)/s with torchvision's ImageNet mean/std (blue's 0.255 is
#: upstream's typo for 0.225, kept: the weights were trained through it),
#: then ·(s'/0.5) + (m − 0.5)/0.5 to Google's Inception range.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_UPSTREAM_STD = (0.229, 0.224, 0.255)
_TORCHVISION_STD = (0.229, 0.224, 0.225)


class InceptionStylePredictor(nn.Module):
    """The style predictor P(x) of Ghiasi et al. (Sec. 3.2) as trained by
    Jackson et al.: Inception-v3 (Szegedy et al., CVPR 2016) up to
    ``Mixed_6e``, spatial mean, one linear layer to the 100-d embedding.

    Parameter names equal torchvision's ``Inception3`` for ``Conv2d_1a_3x3``
    … ``Mixed_6e`` plus ``fc`` (422 state-dict entries, 9,042,756
    parameters). Input: RGB in [0, 1] at any size ≥ 43×43 (no resize).
    """

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = _BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = _BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = _BasicConv2d(80, 192, 3)
        self.Mixed_5b = _InceptionA(192, pool_features=32)
        self.Mixed_5c = _InceptionA(256, pool_features=64)
        self.Mixed_5d = _InceptionA(288, pool_features=64)
        self.Mixed_6a = _InceptionB(288)
        self.Mixed_6b = _InceptionC(768, c7=128)
        self.Mixed_6c = _InceptionC(768, c7=160)
        self.Mixed_6d = _InceptionC(768, c7=160)
        self.Mixed_6e = _InceptionC(768, c7=192)
        self.fc = nn.Linear(768, STYLE_DIM)

    @staticmethod
    def preprocess(x: Tensor) -> Tensor:
        """Upstream's two per-channel affine steps (see module doc)."""
        mean = x.new_tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(_UPSTREAM_STD).view(1, 3, 1, 1)
        google = x.new_tensor(_TORCHVISION_STD).view(1, 3, 1, 1)
        x = (x - mean) / std
        return x * (google / 0.5) + (mean - 0.5) / 0.5

    def forward(self, x: Tensor) -> Tensor:
        x = self.preprocess(x)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ('Mixed_5b', 'Mixed_5c', 'Mixed_5d', 'Mixed_6a',
                     'Mixed_6b', 'Mixed_6c', 'Mixed_6d', 'Mixed_6e'):
            x = getattr(self, name)(x)
        return self.fc(x.mean(dim=(2, 3)))


# -------------------------------------------------------------------- weights
def recipe_random_state_dict(module: nn.Module) -> Dict[str, Tensor]:
    """Deterministic random weights for ``module``'s state dict, independent
    of key order: each tensor from a generator seeded with the CRC-32 of its
    key. For tests and cost benchmarks only (no trained behaviour); the
    golden fixture of ``tests/test_style_augmentor.py`` was computed with
    the same recipe. First matching rule: ``num_batches_tracked`` 0;
    ``running_var`` 0.5 + U(0,1); ``running_mean`` / ``.bn.bias`` 0.1·N;
    ``.bn.weight`` 1 + 0.1·N; 4-D N·√(2/fan_in); 2-D N/√fan_in;
    ``.fc_gamma*.bias`` 1 + 0.1·N; else 0.1·N."""
    out = {}
    for key, ref in module.state_dict().items():
        gen = torch.Generator().manual_seed(zlib.crc32(key.encode('utf-8')))
        shape = tuple(ref.shape)

        def normal():
            return torch.randn(shape, generator=gen, dtype=torch.float32)

        if key.endswith('num_batches_tracked'):
            value = torch.zeros((), dtype=torch.int64)
        elif key.endswith('running_var'):
            value = 0.5 + torch.rand(shape, generator=gen)
        elif key.endswith('running_mean') or key.endswith('.bn.bias'):
            value = 0.1 * normal()
        elif key.endswith('.bn.weight'):
            value = 1.0 + 0.1 * normal()
        elif len(shape) == 4:
            value = normal() * (2.0 / (shape[1] * shape[2] * shape[3]))**0.5
        elif len(shape) == 2:
            value = normal() / shape[1]**0.5
        elif '.fc_gamma' in key and key.endswith('.bias'):
            value = 1.0 + 0.1 * normal()
        else:
            value = 0.1 * normal()
        out[key] = value
    return out


def _where_to_get(what: str) -> str:
    name = UPSTREAM_FILES[what][0]
    return (f'Get {name} from {UPSTREAM_URL} (folder styleaug/checkpoints/, '
            f'e.g. `git clone {UPSTREAM_URL}`; MIT licence; git blob id '
            f'{UPSTREAM_FILES[what][2]}, check with `git hash-object '
            f'{name}`) and point the StyleAugmentorStyleTransfer argument '
            f'{what}_ckpt at it (README, "Pretrained weights").')


def _torch_load(path: str, what: str, trusted: bool):
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        if not trusted:
            raise RuntimeError(
                f'StyleAugmentor {what} file {path!r} holds more than '
                'tensors and plain containers, so it was not unpickled '
                f'(torch.load weights_only=True: {err}). If you trust the '
                'file, set trusted_checkpoints=True to load it with full '
                'unpickling.') from err
    return torch.load(path, map_location='cpu', weights_only=False)


def load_upstream_weights(module: nn.Module,
                          path: str,
                          what: str,
                          trusted: bool = False) -> int:
    """Load an upstream checkpoint file into ``module`` strictly.

    Accepts upstream's ``{'state_dict_ghiasi': sd}`` /
    ``{'state_dict_stylepredictor': sd}`` or a bare state dict, strips a
    ``module.`` prefix and tolerates only missing ``num_batches_tracked``
    entries (files saved before torch 0.4.1). Any other missing or
    unexpected key, or a shape mismatch, raises an error naming the file.

    Args:
        module: :class:`GhiasiStyleTransformer` or
            :class:`InceptionStylePredictor`.
        path: the checkpoint file.
        what: ``'transformer'`` or ``'predictor'``.
        trusted: fall back to full unpickling if the file needs it.

    Returns:
        The number of tensors loaded.
    """
    name, key, _ = UPSTREAM_FILES[what]
    if not osp.isfile(osp.expanduser(path)):
        raise FileNotFoundError(
            f'StyleAugmentor {what} weights {path!r} do not exist. '
            f'{_where_to_get(what)}')
    ckpt = _torch_load(osp.expanduser(path), what, trusted)
    if isinstance(ckpt, dict) and key in ckpt:
        state = ckpt[key]
    elif isinstance(ckpt, dict) and all(
            isinstance(v, Tensor) for v in ckpt.values()):
        state = ckpt
    else:
        found = list(ckpt)[:5] if isinstance(ckpt, dict) else type(ckpt)
        raise ValueError(
            f'StyleAugmentor {what} file {path!r} has no {key!r} entry and is '
            f'not a state dict (found {found}); expected upstream\'s {name}. '
            f'{_where_to_get(what)}')
    state = {(k[len('module.'):] if k.startswith('module.') else k): v
             for k, v in state.items()}
    expected = module.state_dict()
    missing = [
        k for k in expected
        if k not in state and not k.endswith('num_batches_tracked')
    ]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f'{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})'
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:

        def listing(items):
            more = f', ... ({len(items)} in all)' if len(items) > 5 else ''
            return ', '.join(items[:5]) + more

        problems = [
            f'{label}: {listing(items)}'
            for label, items in (('missing', missing),
                                 ('unexpected', unexpected),
                                 ('shape mismatch', mismatched)) if items
        ]
        raise ValueError(
            f'StyleAugmentor {what} file {path!r} does not match upstream\'s '
            f'{name} ({len(expected)} entries): ' + '; '.join(problems) +
            f'. {_where_to_get(what)}')
    module.load_state_dict(state, strict=False)
    return len(state)


def load_embedding_statistics(path: Optional[str] = None,
                              trusted: bool = False) -> Dict[str, Tensor]:
    """The style-embedding statistics of upstream's
    ``checkpoint_embeddings.pth`` (``None``: the copy shipped with the
    package), as float32 tensors: ``mean`` μ (100,), ``sqrt_cov`` A =
    U·diag(√s) (100, 100) from numpy's float64 SVD of the PBN covariance Σ
    (A·Aᵀ = Σ), and ``imagenet_mean`` (100,)."""
    path = PACKAGED_EMBEDDINGS if path is None else osp.expanduser(path)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'StyleAugmentor embedding statistics {path!r} do not exist. '
            f'{_where_to_get("embeddings")} Or leave embeddings_ckpt=None '
            'to use the copy shipped with mmseg-uda.')
    stats = _torch_load(path, 'embedding statistics', trusted)
    keys = ('pbn_embedding_mean', 'pbn_embedding_covariance',
            'imagenet_embedding_mean')
    shapes = ((STYLE_DIM, ), (STYLE_DIM, STYLE_DIM), (STYLE_DIM, ))
    if not isinstance(stats, dict) or any(
            not isinstance(stats.get(k), Tensor)
            or stats[k].numel() != int(np.prod(s))
            for k, s in zip(keys, shapes)):
        found = list(stats)[:5] if isinstance(stats, dict) else type(stats)
        raise ValueError(
            f'StyleAugmentor embedding statistics {path!r} must hold '
            f'{keys} of shapes {shapes}; found {found}. '
            f'{_where_to_get("embeddings")}')
    cov = stats['pbn_embedding_covariance'].double().numpy()
    u, s, _ = np.linalg.svd(cov)
    sqrt_cov = torch.from_numpy(u @ np.diag(s**0.5)).float()
    return dict(
        mean=stats['pbn_embedding_mean'].reshape(STYLE_DIM).float(),
        sqrt_cov=sqrt_cov,
        imagenet_mean=stats['imagenet_embedding_mean'].reshape(
            STYLE_DIM).float())


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------- engine
@MODELS.register_module()
class StyleAugmentorStyleTransfer(BaseStyleTransfer):
    """Jackson et al.'s StyleAugmentor (CVPRW 2019), T2S-DA's style engine:
    each source image re-rendered by the Ghiasi et al. transformer in the
    style e = α·z + (1 − α)·P(x), z a random Painter-by-Numbers style
    (see module doc). Needs no target image; label-preserving for sizes
    that are multiples of 4.

    The networks are frozen (no gradients, eval mode whatever ``train()``
    is called on the owner) and kept outside the segmentor's module tree
    (T2S holds the engine as a plain attribute), so DDP, the optimiser and
    checkpoints never see their 11 M parameters; they move to the input's
    device on first use and run in float32 with autocast off.

    Args:
        transformer_ckpt (str, optional): upstream
            ``checkpoint_transformer.pth``.
        predictor_ckpt (str, optional): upstream
            ``checkpoint_stylepredictor.pth``.
        embeddings_ckpt (str, optional): upstream
            ``checkpoint_embeddings.pth``; None uses the identical copy
            shipped with the package.
        alpha (float): weight α of the random style (upstream's and
            StypeTransfer's demo default 0.5; 1 = pure random style,
            0 = the image re-rendered in its own predicted style).
        base_embedding (str): the (1 − α) term: ``'predictor'`` P(x)
            (upstream default), ``'imagenet_mean'`` (upstream's
            ``useStylePredictor=False``, in float32) or ``'zero'``.
        predictor_input_scale (float): P sees ``scale·x``; 1 = [0, 1]
            (upstream README and the statistics script), 255 = the 0–255
            input of StypeTransfer's ``demo_style.py`` (T2S-DA's use is
            unknown; the transformer is invariant to this scale).
        downsamples (int): run G on the image average-pooled 2^k times and
            upsample its output bilinearly (upstream option, 4^k cheaper).
        random_weights (bool): no checkpoint files; deterministic random
            weights (:func:`recipe_random_state_dict`). For tests and cost
            benchmarks only.
        trusted_checkpoints (bool): allow full unpickling of the files.
        clamp (bool): clamp to 0..255 (the sigmoid output never leaves it).
    """
    requires_target = False

    def __init__(self,
                 transformer_ckpt: Optional[str] = None,
                 predictor_ckpt: Optional[str] = None,
                 embeddings_ckpt: Optional[str] = None,
                 alpha: float = 0.5,
                 base_embedding: str = 'predictor',
                 predictor_input_scale: float = 1.0,
                 downsamples: int = 0,
                 random_weights: bool = False,
                 trusted_checkpoints: bool = False,
                 clamp: bool = False):
        super().__init__(clamp=clamp)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f'StyleAugmentor alpha must be in [0, 1], got '
                             f'{alpha}.')
        if base_embedding not in BASE_EMBEDDINGS:
            raise ValueError(f'StyleAugmentor base_embedding must be one of '
                             f'{BASE_EMBEDDINGS}, got {base_embedding!r}.')
        if int(downsamples) < 0:
            raise ValueError('StyleAugmentor downsamples must be >= 0, got '
                             f'{downsamples}.')
        if not random_weights and (transformer_ckpt is None or
                                   predictor_ckpt is None):
            absent = [
                w for w, p in (('transformer', transformer_ckpt),
                               ('predictor', predictor_ckpt)) if p is None
            ]
            raise ValueError(
                'StyleAugmentorStyleTransfer needs the upstream weight files '
                f'({" and ".join(a + "_ckpt" for a in absent)} '
                f'{"is" if len(absent) == 1 else "are"} None). ' +
                ' '.join(_where_to_get(a) for a in absent) +
                ' For cost benchmarks only, random_weights=True runs it '
                'untrained.')
        self.alpha = float(alpha)
        self.base_embedding = base_embedding
        self.predictor_input_scale = float(predictor_input_scale)
        self.downsamples = int(downsamples)
        self.random_weights = random_weights
        # building must not consume the global RNG (it would shift the
        # initialisation of every module built after the engine)
        with torch.random.fork_rng(devices=[]):
            self.transformer = GhiasiStyleTransformer()
            self.predictor = InceptionStylePredictor()
        #: tensors loaded per file (logged by the owner if wanted)
        self.loaded = {}
        if random_weights:
            for what, net in (('transformer', self.transformer),
                              ('predictor', self.predictor)):
                net.load_state_dict(recipe_random_state_dict(net))
        else:
            for what, net, path in (
                    ('transformer', self.transformer, transformer_ckpt),
                    ('predictor', self.predictor, predictor_ckpt)):
                self.loaded[what] = load_upstream_weights(
                    net, path, what, trusted_checkpoints)
        stats = load_embedding_statistics(embeddings_ckpt,
                                          trusted_checkpoints)
        self.mean, self.sqrt_cov = stats['mean'], stats['sqrt_cov']
        self.imagenet_mean = stats['imagenet_mean']
        for net in (self.transformer, self.predictor):
            net.requires_grad_(False)
            net.eval()

    # ----------------------------------------------------------- helpers
    def _to(self, device: torch.device) -> None:
        if self.mean.device != device:
            self.transformer.to(device)
            self.predictor.to(device)
            self.mean = self.mean.to(device)
            self.sqrt_cov = self.sqrt_cov.to(device)
            self.imagenet_mean = self.imagenet_mean.to(device)
        # eval whatever the owner did (BatchNorm must use running stats)
        self.transformer.eval()
        self.predictor.eval()

    def sample_parameters(self, num_images: int, source_shape: Sequence[int],
                          generator: torch.Generator) -> Tensor:
        """ε (N, 100) float32, ``torch.randn`` from ``generator``: row g is
        the style noise of image g of the (global) batch; a generator
        seeded s gives upstream's draw after ``torch.manual_seed(s)``."""
        return torch.randn(num_images, STYLE_DIM, generator=generator)

    def random_style(self, eps: Tensor) -> Tensor:
        """z = ε·Aᵀ + μ (Jackson et al., Sec. 3.1): a sample of the normal
        fitted to the PBN style embeddings."""
        self._to(eps.device)
        return eps.float() @ self.sqrt_cov.t() + self.mean

    @torch.no_grad()
    def embed(self, rgb01: Tensor) -> Tensor:
        """The base embedding of RGB [0, 1] images (B, 100)."""
        self._to(rgb01.device)
        if self.base_embedding == 'predictor':
            return self.predictor(rgb01 * self.predictor_input_scale)
        base = self.imagenet_mean if self.base_embedding == 'imagenet_mean' \
            else torch.zeros_like(self.imagenet_mean)
        return base.expand(rgb01.shape[0], STYLE_DIM)

    @torch.no_grad()
    def augment(self, rgb01: Tensor, eps: Tensor) -> Tensor:
        """Upstream's ``StyleAugmentor.forward`` with a given ε: RGB
        [0, 1] (B, 3, H, W) -> stylised RGB in (0, 1), 4⌈H/4⌉ × 4⌈W/4⌉
        (H, W multiples of 2^downsamples)."""
        _check_images(rgb01, 'StyleAugmentor input', 3)
        self._to(rgb01.device)
        with torch.autocast(device_type=rgb01.device.type, enabled=False):
            x = rgb01.float()
            style = self.alpha * self.random_style(eps.to(x.device)) + \
                (1.0 - self.alpha) * self.embed(x)
            k = self.downsamples
            if k:
                if x.shape[-2] % 2**k or x.shape[-1] % 2**k:
                    raise ValueError(
                        f'StyleAugmentor downsamples={k} needs H and W '
                        f'divisible by {2**k}, got {tuple(x.shape[-2:])}.')
                for _ in range(k):
                    x = F.avg_pool2d(x, 2)
            out = self.transformer(x, style)
            if k:
                out = F.interpolate(out, scale_factor=2**k, mode='bilinear',
                                    align_corners=False)
        return out

    def stylise(self,
                source: Tensor,
                target_stats: Optional[Tensor] = None,
                params: Optional[Tensor] = None,
                rgb: bool = True) -> Tensor:
        """Stylised source pixels (0..255, the input's channel order); row i
        of ``params`` (ε) styles image i. H and W must be multiples of 4
        (and of 4·2^downsamples) so the output stays pixel-aligned with the
        label."""
        _check_images(source, 'StyleAugmentorStyleTransfer source', 3)
        self._check_rows('StyleAugmentor style noise', params,
                         source.shape[0])
        h, w = source.shape[-2:]
        step = 4 * 2**self.downsamples
        if h % step or w % step or min(h, w) < max(step, 8):
            raise ValueError(
                f'StyleAugmentor: source crops of {h}x{w} would change size '
                f'(the transformer outputs multiples of 4); use crop sizes '
                f'that are multiples of {step} and at least {max(step, 8)} '
                '(e.g. 512x512).')
        if self.base_embedding == 'predictor' and min(h, w) < 43:
            raise ValueError(f'StyleAugmentor: the style predictor needs '
                             f'crops of at least 43x43, got {h}x{w}.')
        if params.shape[1:] != (STYLE_DIM, ):
            raise ValueError(f'StyleAugmentor style noise has shape '
                             f'{tuple(params.shape)}, expected (N, '
                             f'{STYLE_DIM}).')
        x = source.float() / 255.0
        x = x if rgb else x.flip(1)
        out = self.augment(x, params) * 255.0
        out = out if rgb else out.flip(1)
        return self._finish(out.to(source.dtype))
