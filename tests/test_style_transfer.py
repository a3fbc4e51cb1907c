"""Stylisations of T2S: FDA checked in the Fourier domain, Lab transfer
against skimage, random style (determinism, phase, realness)."""
import numpy as np
import pytest
import torch
from skimage.color import rgb2lab

from mmseg_uda.models.utils.style_transfer import (FDAStyleTransfer,
                                                   LabStyleTransfer,
                                                   RandomStyleTransfer,
                                                   band_half_width,
                                                   fda_source_to_target,
                                                   lab_to_rgb, rgb_to_lab)
from mmseg_uda.registry import MODELS


def images(b, h, w, seed, low=0.0, high=255.0):
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(b, 3, h, w, generator=g,
                                           dtype=torch.float64)


def numpy_fda(src, trg, beta):
    """FDA with numpy's unnormalised FFT and an explicit loop over the
    band (same-size images, Yang & Soatto Eq. 2-3)."""
    out = np.empty_like(src)
    for i in range(src.shape[0]):
        fs = np.fft.fftshift(np.fft.fft2(src[i]), axes=(-2, -1))
        ft = np.fft.fftshift(np.fft.fft2(trg[i]), axes=(-2, -1))
        amp, pha = np.abs(fs), np.angle(fs)
        h, w = src.shape[-2:]
        b = int(np.floor(min(h, w) * beta))
        for y in range(h // 2 - b, h // 2 + b + 1):
            for x in range(w // 2 - b, w // 2 + b + 1):
                amp[:, y, x] = np.abs(ft[:, y, x])
        spec = np.fft.ifftshift(amp * np.exp(1j * pha), axes=(-2, -1))
        out[i] = np.real(np.fft.ifft2(spec))
    return out


@pytest.mark.parametrize('size', [(32, 48), (33, 47)])
def test_fda_matches_numpy_loop_reference(size):
    src, trg = images(2, *size, seed=0), images(2, *size, seed=1)
    out = fda_source_to_target(src, trg, beta=0.1)
    ref = numpy_fda(src.numpy(), trg.numpy(), 0.1)
    assert np.allclose(out.numpy(), ref, atol=1e-8)


@pytest.mark.parametrize('target_size', [(40, 56), (64, 80)])
def test_fda_keeps_source_phase_and_swaps_exactly_the_band(target_size):
    """Fourier domain of the output: phase = source phase everywhere, the
    centred (2b+1)² amplitude band = the target's (per-pixel normalised
    DFT, so a larger target gives the same band statistics), amplitude
    outside the band = the source's; the output is real."""
    h, w, beta = 40, 56, 0.06
    src, trg = images(2, h, w, seed=2), images(2, *target_size, seed=3)
    out = FDAStyleTransfer(beta=beta).stylise(
        src,
        FDAStyleTransfer(beta=beta).target_statistics(trg, (h, w)))
    spec = lambda x: torch.fft.fftshift(  # noqa: E731
        torch.fft.fft2(x, norm='forward'), dim=(-2, -1))
    s_out, s_src, s_trg = spec(out), spec(src), spec(trg)
    b = band_half_width(h, w, beta)
    assert b == 2
    band = torch.zeros(h, w, dtype=torch.bool)
    band[h // 2 - b:h // 2 + b + 1, w // 2 - b:w // 2 + b + 1] = True
    th, tw = target_size
    trg_band = s_trg[..., th // 2 - b:th // 2 + b + 1,
                     tw // 2 - b:tw // 2 + b + 1].abs()
    assert torch.allclose(s_out.abs()[..., band].view_as(trg_band), trg_band,
                          atol=1e-9)
    assert torch.allclose(s_out.abs()[..., ~band], s_src.abs()[..., ~band],
                          atol=1e-9)
    # phase kept wherever it is defined
    ok = s_src.abs() > 1e-6
    phase_diff = torch.angle(s_out * s_src.conj())
    assert phase_diff[ok].abs().max() < 1e-6
    assert not torch.equal(out, src)


def test_fda_with_only_the_dc_term_shifts_channel_means():
    """β small enough for b = 0 swaps only the DC term: each channel's mean
    becomes the target's, everything else (edges, labels) is unchanged."""
    src, trg = images(2, 20, 30, seed=4), images(2, 20, 30, seed=5)
    out = fda_source_to_target(src, trg, beta=0.01)
    expected = src - src.mean((2, 3), keepdim=True) + \
        trg.mean((2, 3), keepdim=True)
    assert torch.allclose(out, expected, atol=1e-9)


def test_fda_keeps_label_aligned_structure():
    """A source image with a sharp vertical edge keeps the edge at the
    same column after FDA with a strong target (labels stay aligned)."""
    src = torch.zeros(1, 3, 64, 64, dtype=torch.float64)
    src[..., 37:] = 200.0
    trg = images(1, 64, 64, seed=6)
    out = fda_source_to_target(src, trg, beta=0.05)
    grad = (out[..., 1:] - out[..., :-1]).abs().mean((0, 1, 2))
    assert int(grad.argmax()) == 36


def test_fda_errors():
    with pytest.raises(ValueError, match='beta'):
        FDAStyleTransfer(beta=0.6)
    fda = FDAStyleTransfer(beta=0.2)
    with pytest.raises(ValueError, match='does not fit'):
        fda.target_statistics(images(1, 8, 8, 0), (64, 64))
    with pytest.raises(ValueError, match='rows'):
        fda.stylise(images(2, 16, 16, 0), torch.zeros(1, 3, 7, 7))


def test_rgb_to_lab_matches_skimage_and_round_trips():
    rgb = images(2, 9, 11, seed=7)
    lab = rgb_to_lab(rgb)
    ref = rgb2lab(rgb.permute(0, 2, 3, 1).numpy() / 255.0)
    assert np.allclose(lab.permute(0, 2, 3, 1).numpy(), ref, atol=1e-3)
    assert torch.allclose(lab_to_rgb(lab), rgb.float(), atol=1e-2)


def test_lab_transfer_gives_target_lab_statistics():
    src = images(2, 16, 16, seed=8, low=90, high=160)
    trg = images(2, 24, 20, seed=9, low=70, high=140)
    style = LabStyleTransfer(clamp=False)
    stats = style.target_statistics(trg, (16, 16))
    out = style.stylise(src, stats)
    lab = rgb_to_lab(out).flatten(2)
    assert torch.allclose(lab.mean(-1), stats[:, 0].float(), atol=0.05)
    assert torch.allclose(lab.std(-1, unbiased=False), stats[:, 1].float(),
                          atol=0.05)


def test_lab_transfer_respects_bgr_channel_order():
    src, trg = images(1, 8, 8, seed=10), images(1, 8, 8, seed=11)
    style = LabStyleTransfer()
    rgb_out = style.stylise(src, style.target_statistics(trg, (8, 8)))
    bgr_out = style.stylise(
        src.flip(1), style.target_statistics(trg.flip(1), (8, 8), rgb=False),
        rgb=False)
    assert torch.allclose(bgr_out.flip(1), rgb_out, atol=1e-4)


def test_random_style_is_reproducible_and_needs_no_target():
    style = MODELS.build(dict(type='RandomStyleTransfer', beta=0.1))
    assert not style.requires_target
    src = images(3, 20, 20, seed=12).float()

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return style.stylise(src, params=style.sample_parameters(
            3, (20, 20), g))

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert a.min() >= 0 and a.max() <= 255 and a.shape == src.shape
    # each image gets its own parameters
    assert not torch.allclose(a[0] - src[0], a[1] - src[1])


def test_random_amplitude_keeps_phase_and_real_output():
    style = RandomStyleTransfer(beta=0.1, amplitude_sigma=0.5,
                                photometric=False, clamp=False)
    src = images(2, 30, 30, seed=13)
    params = style.sample_parameters(2, (30, 30),
                                     torch.Generator().manual_seed(0))
    out = style.stylise(src, params=params.double())
    s_out = torch.fft.fft2(out.to(torch.complex128))
    s_src = torch.fft.fft2(src.to(torch.complex128))
    ok = s_src.abs() > 1e-6
    assert torch.angle(s_out * s_src.conj())[ok].abs().max() < 1e-6
    assert not torch.allclose(out, src)
    # the symmetrised noise keeps the spectrum Hermitian: the inverse of the
    # modified spectrum has no imaginary part to drop
    assert torch.fft.ifft2(s_out).imag.abs().max() < 1e-9


def test_random_style_identity_when_disabled():
    style = RandomStyleTransfer(amplitude_sigma=0.0, photometric=False)
    src = images(2, 16, 16, seed=14)
    params = style.sample_parameters(2, (16, 16), torch.Generator())
    assert torch.allclose(style.stylise(src, params=params), src)
    with pytest.raises(ValueError, match='range'):
        RandomStyleTransfer(contrast=(1.5, 0.5))
