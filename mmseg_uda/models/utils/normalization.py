"""Undo and redo the data preprocessor's normalisation.

In mmseg 1.x the mean/std live on ``model.data_preprocessor`` rather than in
the image metas (as DAFormer's mmseg 0.x code assumes), so methods that
change pixel values (colour
jitter on mixed images, Fourier style transfer) or show images go through
these helpers.
"""
import torch
from torch import Tensor, nn


def _stats(preprocessor: nn.Module, ref: Tensor):
    if getattr(preprocessor, '_enable_normalize', False):
        mean = preprocessor.mean.to(ref)
        std = preprocessor.std.to(ref)
    else:
        mean = torch.zeros(ref.shape[1], 1, 1).to(ref)
        std = torch.ones(ref.shape[1], 1, 1).to(ref)
    return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)


def denormalize(img: Tensor, preprocessor: nn.Module) -> Tensor:
    """Normalised network input (B, C, H, W) -> pixel values in 0..255, in
    the channel order the network sees."""
    mean, std = _stats(preprocessor, img)
    return img * std + mean


def renormalize(img: Tensor, preprocessor: nn.Module) -> Tensor:
    """Inverse of :func:`denormalize`."""
    mean, std = _stats(preprocessor, img)
    return (img - mean) / std


def to_rgb_uint8(img: Tensor, preprocessor: nn.Module) -> Tensor:
    """Normalised input -> displayable RGB uint8 (B, 3, H, W).

    Inputs are RGB when the preprocessor converted BGR->RGB
    (``bgr_to_rgb=True``), else they are in the loaded BGR order.
    """
    pixels = denormalize(img.detach().float(), preprocessor)
    if not getattr(preprocessor, 'channel_conversion', False) and \
            pixels.shape[1] == 3:
        pixels = pixels.flip(1)
    return pixels.clamp(0, 255).round().to(torch.uint8)
