"""Label-preserving image stylisation for T2S-DA (see docs/t2s.md).

Every stylisation works on de-normalised pixel values (0..255, the channel
order the network sees; ``UDAContext.denormalize``) and keeps the geometry
of the source image, so the source label stays pixel-aligned with the
stylised image.

The work is split in three calls so that a distributed run can exchange
only small per-image statistics (``T2S`` all-gathers them and pairs
images with a generator shared by all processes):

* :meth:`target_statistics` — per target image, what the stylisation needs
  from it (FDA: the centred low-frequency amplitude band; LAB: mean/std
  per Lab channel). Fixed shape per image.
* :meth:`sample_parameters` — per source image, random parameters drawn
  from a given ``torch.Generator`` (random style only).
* :meth:`stylise` — the stylised source pixels.

Classes:
    :class:`FDAStyleTransfer`: Fourier domain adaptation (Yang & Soatto,
        CVPR 2020), the T2S default [RECON].
    :class:`LabStyleTransfer`: Reinhard-style mean/std colour transfer in
        CIELAB [RECON option].
    :class:`RandomStyleTransfer`: random amplitude spectrum + photometric
        jitter, needs no target image (domain generalisation)
        (reconstructed).

T2S-DA's own engine, StyleAugmentor (Jackson et al., CVPRW 2019), is
:class:`~mmseg_uda.models.utils.style_augmentor.StyleAugmentorStyleTransfer`
(its own module: two networks and a weight loader).
"""
import math
from abc import ABC, abstractmethod
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from mmseg_uda.registry import MODELS

# sRGB (D65) -> CIE XYZ, IEC 61966-2-1.
_RGB_TO_XYZ = torch.tensor([[0.412453, 0.357580, 0.180423],
                            [0.212671, 0.715160, 0.072169],
                            [0.019334, 0.119193, 0.950227]])
# D65 white point, 2° observer (the reference white of skimage's rgb2lab).
_D65_WHITE = torch.tensor([0.95047, 1.0, 1.08883])


def _check_images(img: Tensor, what: str, channels: Optional[int] = None):
    if img.dim() != 4:
        raise ValueError(f'{what}: expected a (B, C, H, W) batch, got shape '
                         f'{tuple(img.shape)}.')
    if channels is not None and img.shape[1] != channels:
        raise ValueError(f'{what}: expected {channels} channels, got '
                         f'{img.shape[1]}.')


def _at_least_float32(img: Tensor) -> Tensor:
    """float16/bfloat16/integers -> float32; float64 stays float64."""
    return img.to(torch.promote_types(img.dtype, torch.float32)) \
        if img.is_floating_point() else img.float()


def centred_spectrum(img: Tensor) -> Tensor:
    """2-D DFT of each channel with the zero frequency moved to the centre
    (index ``(H // 2, W // 2)``).

    ``norm='forward'`` divides by H·W, so the coefficients are per-pixel
    averages and a low-frequency band means the same thing for images of
    different sizes (with equal sizes the stylised result is identical to
    the unnormalised transform of the FDA paper).
    """
    spec = torch.fft.fft2(_at_least_float32(img), norm='forward')
    return torch.fft.fftshift(spec, dim=(-2, -1))


def inverse_centred_spectrum(spec: Tensor) -> Tensor:
    """Inverse of :func:`centred_spectrum` (real part)."""
    spec = torch.fft.ifftshift(spec, dim=(-2, -1))
    return torch.fft.ifft2(spec, norm='forward').real


def band_half_width(height: int, width: int, beta: float) -> int:
    """FDA's b = floor(min(H, W)·β): the swapped band spans the centred
    (2b+1)×(2b+1) frequencies (Yang & Soatto, CVPR 2020, Eq. 3)."""
    b = int(math.floor(min(height, width) * beta))
    if 2 * b + 1 > min(height, width):
        raise ValueError(f'beta={beta} gives a band of {2 * b + 1} '
                         f'frequencies for a {height}x{width} image; use a '
                         'smaller beta.')
    return b


def band_slices(height: int, width: int, b: int) -> Tuple[slice, slice]:
    """Row/column slices of the centred (2b+1)×(2b+1) band."""
    ch, cw = height // 2, width // 2
    return slice(ch - b, ch + b + 1), slice(cw - b, cw + b + 1)


def fda_source_to_target(source: Tensor, target: Tensor,
                         beta: float = 0.01) -> Tensor:
    """Fourier domain adaptation of a batch of source images towards a batch
    of target images (pairwise): the centred low-frequency band of the
    source amplitude spectrum is replaced by the target's, the source phase
    is kept (Yang & Soatto, CVPR 2020, Eq. 2–3). Pixel values, (B, C, H, W);
    target images may have another size (see :func:`centred_spectrum`)."""
    fda = FDAStyleTransfer(beta=beta)
    stats = fda.target_statistics(target, tuple(source.shape[-2:]))
    return fda.stylise(source, stats)


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """sRGB pixels 0..255 (B, 3, H, W) -> CIELAB (D65, 2° observer), the
    conversion of ``skimage.color.rgb2lab``."""
    _check_images(rgb, 'rgb_to_lab', 3)
    c = (rgb.float() / 255.0).clamp(0.0, 1.0)
    linear = torch.where(c > 0.04045, ((c + 0.055) / 1.055)**2.4, c / 12.92)
    xyz = torch.einsum('ij,bjhw->bihw', _RGB_TO_XYZ.to(c), linear)
    xyz = xyz / _D65_WHITE.to(c).view(1, 3, 1, 1)
    eps = 0.008856
    f = torch.where(xyz > eps, xyz.clamp(min=eps)**(1.0 / 3.0),
                    7.787 * xyz + 16.0 / 116.0)
    light = torch.where(xyz[:, 1:2] > eps, 116.0 * f[:, 1:2] - 16.0,
                        903.3 * xyz[:, 1:2])
    a = 500.0 * (f[:, 0:1] - f[:, 1:2])
    b = 200.0 * (f[:, 1:2] - f[:, 2:3])
    return torch.cat([light, a, b], dim=1)


def lab_to_rgb(lab: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_lab` (result not clamped; out-of-gamut Lab
    values give pixels outside 0..255)."""
    _check_images(lab, 'lab_to_rgb', 3)
    light, a, b = lab.float().unbind(1)
    fy = (light + 16.0) / 116.0
    fx = fy + a / 500.0
    fz = fy - b / 200.0
    f = torch.stack([fx, fy, fz], dim=1)
    xyz = torch.where(f > 0.2068966, f**3, (f - 16.0 / 116.0) / 7.787)
    xyz = xyz * _D65_WHITE.to(xyz).view(1, 3, 1, 1)
    linear = torch.einsum('ij,bjhw->bihw',
                          torch.linalg.inv(_RGB_TO_XYZ).to(xyz), xyz)
    c = torch.where(linear > 0.0031308,
                    1.055 * linear.clamp(min=0.0031308)**(1.0 / 2.4) - 0.055,
                    12.92 * linear)
    return c * 255.0


class BaseStyleTransfer(ABC):
    """Interface of the stylisations used by ``T2S`` (see module doc).

    Args:
        clamp (bool): clamp the stylised pixels to 0..255.
    """
    #: whether :meth:`stylise` needs target statistics.
    requires_target: bool = True

    def __init__(self, clamp: bool = True):
        self.clamp = clamp

    def target_statistics(self, target: Tensor,
                          source_shape: Sequence[int],
                          rgb: bool = True) -> Tensor:
        """Per-target-image statistics (T, ...), fixed shape per image for
        a given source size."""
        raise TypeError(f'{type(self).__name__} uses no target image.')

    def sample_parameters(self, num_images: int, source_shape: Sequence[int],
                          generator: torch.Generator) -> Optional[Tensor]:
        """Random per-image parameters (N, ...) on the CPU, or None."""
        return None

    @abstractmethod
    def stylise(self,
                source: Tensor,
                target_stats: Optional[Tensor] = None,
                params: Optional[Tensor] = None,
                rgb: bool = True) -> Tensor:
        """Stylised copies of ``source`` pixels (B, C, H, W), one per image,
        using row i of ``target_stats`` / ``params`` for image i. ``rgb``
        tells whether the channels are RGB (else BGR)."""

    def _finish(self, img: Tensor) -> Tensor:
        return img.clamp(0.0, 255.0) if self.clamp else img

    @staticmethod
    def _check_rows(name: str, rows: Optional[Tensor], batch: int):
        if rows is None:
            raise ValueError(f'{name} is required.')
        if rows.shape[0] != batch:
            raise ValueError(f'{name} has {rows.shape[0]} rows for a batch '
                             f'of {batch} source images.')


@MODELS.register_module()
class FDAStyleTransfer(BaseStyleTransfer):
    """Fourier domain adaptation (Yang & Soatto, CVPR 2020, Eq. 2–3;
    ``YanchaoYang/FDA: utils/__init__.py`` centred-band variant): replace
    the centred (2b+1)×(2b+1) low-frequency band of the source amplitude
    spectrum by the target's, b = floor(min(H, W)·β), keep the source
    phase. Parameter-free and label-preserving.

    Args:
        beta (float): band size β (FDA's L; 0.01 is the FDA/T2S default).
        clamp (bool): clamp the result to 0..255. Off by default: FDA feeds
            the unclamped image to the network.
    """

    def __init__(self, beta: float = 0.01, clamp: bool = False):
        super().__init__(clamp=clamp)
        if not 0.0 <= beta < 0.5:
            raise ValueError(f'FDA beta must be in [0, 0.5), got {beta}.')
        self.beta = beta

    def target_statistics(self, target: Tensor,
                          source_shape: Sequence[int],
                          rgb: bool = True) -> Tensor:
        """Amplitude of the target's centred low-frequency band,
        (T, C, 2b+1, 2b+1), b from the *source* size."""
        _check_images(target, 'FDAStyleTransfer target')
        b = band_half_width(*source_shape[-2:], self.beta)
        h, w = target.shape[-2:]
        if 2 * b + 1 > min(h, w):
            raise ValueError(
                f'FDA band of {2 * b + 1} frequencies (from the source size '
                f'{tuple(source_shape[-2:])}) does not fit the {h}x{w} '
                'target image.')
        rows, cols = band_slices(h, w, b)
        return centred_spectrum(target)[..., rows, cols].abs()

    def stylise(self,
                source: Tensor,
                target_stats: Optional[Tensor] = None,
                params: Optional[Tensor] = None,
                rgb: bool = True) -> Tensor:
        _check_images(source, 'FDAStyleTransfer source')
        self._check_rows('FDA target statistics', target_stats,
                         source.shape[0])
        h, w = source.shape[-2:]
        b = band_half_width(h, w, self.beta)
        expected = (source.shape[1], 2 * b + 1, 2 * b + 1)
        if tuple(target_stats.shape[1:]) != expected:
            raise ValueError(f'FDA target band has shape '
                             f'{tuple(target_stats.shape[1:])}, expected '
                             f'{expected} for a {h}x{w} source.')
        spec = centred_spectrum(source)
        amplitude, phase = spec.abs(), spec.angle()
        rows, cols = band_slices(h, w, b)
        amplitude[..., rows, cols] = target_stats.to(amplitude)
        out = inverse_centred_spectrum(torch.polar(amplitude, phase))
        return self._finish(out.to(source.dtype))


@MODELS.register_module()
class LabStyleTransfer(BaseStyleTransfer):
    """Colour transfer by matching the per-channel mean and standard
    deviation in CIELAB (Reinhard et al., 2001, in CIELAB instead of lαβ)
    (reconstructed option).

    Args:
        eps (float): added to the source standard deviation.
        clamp (bool): clamp the result to 0..255.
    """

    def __init__(self, eps: float = 1e-5, clamp: bool = True):
        super().__init__(clamp=clamp)
        self.eps = eps

    @staticmethod
    def _to_rgb(img: Tensor, rgb: bool) -> Tensor:
        return img if rgb else img.flip(1)

    def target_statistics(self, target: Tensor,
                          source_shape: Sequence[int],
                          rgb: bool = True) -> Tensor:
        """(T, 2, 3): Lab mean (row 0) and standard deviation (row 1)."""
        _check_images(target, 'LabStyleTransfer target', 3)
        lab = rgb_to_lab(self._to_rgb(target, rgb)).flatten(2)
        return torch.stack([lab.mean(-1), lab.std(-1, unbiased=False)], 1)

    def stylise(self,
                source: Tensor,
                target_stats: Optional[Tensor] = None,
                params: Optional[Tensor] = None,
                rgb: bool = True) -> Tensor:
        _check_images(source, 'LabStyleTransfer source', 3)
        self._check_rows('Lab target statistics', target_stats,
                         source.shape[0])
        lab = rgb_to_lab(self._to_rgb(source, rgb))
        flat = lab.flatten(2)
        mean = flat.mean(-1)[..., None, None]
        std = flat.std(-1, unbiased=False)[..., None, None]
        t_mean = target_stats[:, 0, :, None, None].to(lab)
        t_std = target_stats[:, 1, :, None, None].to(lab)
        lab = (lab - mean) / (std + self.eps) * t_std + t_mean
        out = self._to_rgb(lab_to_rgb(lab), rgb)
        return self._finish(out.to(source.dtype))


@MODELS.register_module()
class RandomStyleTransfer(BaseStyleTransfer):
    """Random style without a target image, for domain generalisation
    (reconstructed): (1) the centred low-frequency
    amplitude band (size from ``beta`` as in FDA) is multiplied by
    log-normal noise exp(σ·ε), ε symmetric under k → −k so the image stays
    real, phase kept; (2) photometric jitter: per-channel gain, brightness
    offset, contrast and saturation factors, each uniform in its range.

    Args:
        beta (float): amplitude band size (as FDA's β).
        amplitude_sigma (float): σ of the log-amplitude noise; 0 disables
            step (1).
        photometric (bool): apply step (2).
        brightness (float): offset uniform in ±brightness (pixel units).
        contrast (tuple): factor range around the image mean.
        saturation (tuple): factor range around the grey image.
        channel_gain (tuple): per-channel multiplicative gain range.
        clamp (bool): clamp the result to 0..255.
    """
    requires_target = False

    def __init__(self,
                 beta: float = 0.01,
                 amplitude_sigma: float = 0.3,
                 photometric: bool = True,
                 brightness: float = 32.0,
                 contrast: Tuple[float, float] = (0.5, 1.5),
                 saturation: Tuple[float, float] = (0.5, 1.5),
                 channel_gain: Tuple[float, float] = (0.8, 1.2),
                 clamp: bool = True):
        super().__init__(clamp=clamp)
        if amplitude_sigma < 0:
            raise ValueError('amplitude_sigma must be >= 0, got '
                             f'{amplitude_sigma}.')
        for name, rng in (('contrast', contrast), ('saturation', saturation),
                          ('channel_gain', channel_gain)):
            if len(rng) != 2 or rng[0] > rng[1] or rng[0] < 0:
                raise ValueError(f'{name} must be a (low, high) range of '
                                 f'non-negative factors, got {rng}.')
        self.beta = beta
        self.amplitude_sigma = amplitude_sigma
        self.photometric = photometric
        self.brightness = brightness
        self.contrast = tuple(contrast)
        self.saturation = tuple(saturation)
        self.channel_gain = tuple(channel_gain)

    #: parameters per image before the amplitude noise: brightness,
    #: contrast, saturation, 3 channel gains.
    num_photometric = 6

    def sample_parameters(self, num_images: int, source_shape: Sequence[int],
                          generator: torch.Generator) -> Tensor:
        """(N, 6 + 3·(2b+1)²): photometric factors then band noise ε."""
        b = band_half_width(*source_shape[-2:], self.beta)
        u = torch.rand(num_images, self.num_photometric, generator=generator)
        lo = torch.tensor([-self.brightness, self.contrast[0],
                           self.saturation[0]] + [self.channel_gain[0]] * 3)
        hi = torch.tensor([self.brightness, self.contrast[1],
                           self.saturation[1]] + [self.channel_gain[1]] * 3)
        photometric = lo + (hi - lo) * u
        noise = torch.randn(
            num_images, 3, 2 * b + 1, 2 * b + 1, generator=generator)
        return torch.cat([photometric, noise.flatten(1)], dim=1)

    def stylise(self,
                source: Tensor,
                target_stats: Optional[Tensor] = None,
                params: Optional[Tensor] = None,
                rgb: bool = True) -> Tensor:
        _check_images(source, 'RandomStyleTransfer source', 3)
        self._check_rows('random style parameters', params, source.shape[0])
        h, w = source.shape[-2:]
        b = band_half_width(h, w, self.beta)
        n = 2 * b + 1
        if params.shape[1] != self.num_photometric + 3 * n * n:
            raise ValueError(f'random style parameters have {params.shape[1]}'
                             f' columns, expected '
                             f'{self.num_photometric + 3 * n * n} for a '
                             f'{h}x{w} source.')
        out = _at_least_float32(source)
        params = params.to(out)
        if self.amplitude_sigma > 0:
            noise = params[:, self.num_photometric:].view(-1, 3, n, n)
            # symmetric under k -> -k (the flipped centred band), so the
            # modified spectrum stays Hermitian and the image real
            noise = 0.5 * (noise + noise.flip(-2, -1))
            spec = centred_spectrum(out)
            amplitude, phase = spec.abs(), spec.angle()
            rows, cols = band_slices(h, w, b)
            amplitude[..., rows, cols] *= torch.exp(
                self.amplitude_sigma * noise)
            out = inverse_centred_spectrum(torch.polar(amplitude, phase))
        if self.photometric:
            brightness, contrast, saturation = params[:, :3].unbind(1)
            gain = params[:, 3:6]
            out = out * gain[:, :, None, None] + brightness.view(-1, 1, 1, 1)
            mean = out.mean(dim=(1, 2, 3), keepdim=True)
            out = (out - mean) * contrast.view(-1, 1, 1, 1) + mean
            weights = torch.tensor([0.299, 0.587, 0.114]).to(out)
            if not rgb:
                weights = weights.flip(0)
            grey = torch.einsum('c,bchw->bhw', weights, out)[:, None]
            out = (out - grey) * saturation.view(-1, 1, 1, 1) + grey
        return self._finish(out.to(source.dtype))
