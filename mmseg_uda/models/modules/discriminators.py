"""Discriminators for adversarial alignment."""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmseg_uda.registry import MODELS


@MODELS.register_module()
class FCDiscriminator(BaseModule):
    """AdaptSegNet's fully-convolutional output-space discriminator
    (Tsai et al., CVPR 2018; ``wasidennis/AdaptSegNet:
    model/discriminator.py``, also ADVENT's ``get_fc_discriminator``).

    Four 4×4 stride-2 convolutions with ``ndf·(1, 2, 4, 8)`` channels, each
    followed by LeakyReLU(0.2), then a 4×4 stride-2 convolution to one
    domain logit per cell (output stride 32); no normalisation layers.

    Args:
        in_channels (int): channels of the input map (number of classes for
            softmax / self-information inputs).
        ndf (int): width of the first layer.
        negative_slope (float): LeakyReLU slope.
    """

    def __init__(self,
                 in_channels: int,
                 ndf: int = 64,
                 negative_slope: float = 0.2,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        widths = [in_channels, ndf, ndf * 2, ndf * 4, ndf * 8]
        layers = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [
                nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1),
                nn.LeakyReLU(negative_slope, inplace=True)
            ]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(
            widths[-1], 1, kernel_size=4, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f'FCDiscriminator expects {self.in_channels} input channels '
                f'(set in_channels / num_classes), got {x.shape[1]}.')
        if min(x.shape[-2:]) < 32:
            raise ValueError(
                'FCDiscriminator has five stride-2 4x4 convolutions and needs '
                f'inputs of at least 32x32, got {tuple(x.shape[-2:])}: '
                'upsample its input (upsample_to_input=True) or use larger '
                'crops.')
        return self.classifier(self.features(x))


def _check_fc_discriminators(discriminators: Sequence[FCDiscriminator],
                             inputs: Tensor) -> None:
    first = discriminators[0]
    for d in discriminators:
        if type(d) is not FCDiscriminator or \
                d.in_channels != first.in_channels or \
                len(d.features) != len(first.features):
            raise TypeError(
                'Grouped/dual FCDiscriminator passes need identical '
                'FCDiscriminators, got '
                f'{[type(x).__name__ for x in discriminators]}')
    if inputs.shape[1] != len(discriminators) * first.in_channels:
        raise ValueError(
            f'{len(discriminators)} FCDiscriminator(s) with '
            f'{first.in_channels} input channels need '
            f'{len(discriminators) * first.in_channels} input channels, got '
            f'{inputs.shape[1]}')
    if min(inputs.shape[-2:]) < 32:
        raise ValueError(
            'FCDiscriminator has five stride-2 4x4 convolutions and needs '
            f'inputs of at least 32x32, got {tuple(inputs.shape[-2:])}: '
            'upsample its input (upsample_to_input=True) or use larger '
            'crops.')


def _fc_layer_specs(discriminators: Sequence[FCDiscriminator]):
    """(weight, bias, conv) per layer of D_1..D_K evaluated as one grouped
    convolution: weights concatenated along the output channels (a
    differentiable concatenation, so each D_k gets its own gradient). For
    K = 1 the parameters themselves."""
    first = discriminators[0]
    convs = [i for i, m in enumerate(first.features)
             if isinstance(m, nn.Conv2d)]
    specs = []
    for i in convs + [None]:
        layers = [d.classifier if i is None else d.features[i]
                  for d in discriminators]
        if len(layers) == 1:
            weight, bias = layers[0].weight, layers[0].bias
        else:
            weight = torch.cat([m.weight for m in layers])
            bias = torch.cat([m.bias for m in layers])
        specs.append((weight, bias, layers[0]))
    slope = next(m.negative_slope for m in first.features
                 if isinstance(m, nn.LeakyReLU))
    return specs, slope


def grouped_fc_discriminators(discriminators: Sequence[FCDiscriminator],
                              inputs: Tensor,
                              detach_params: bool = False) -> Tensor:
    """K FCDiscriminators D_1..D_K, D_k on its own input x_k, evaluated as
    one grouped convolution per layer (``groups=K``).

    Layer i computes D_k's layer i for every k (the same products and sums
    as K separate calls, one kernel per layer instead of K); the modules and
    their ``state_dict`` keys stay as they are.

    Args:
        discriminators (Sequence[FCDiscriminator]): D_1..D_K, identical
            architectures.
        inputs (Tensor): (B, K·C, H, W), x_k in channels [k·C, (k+1)·C).
        detach_params (bool): use detached parameters (the generator's
            pass: gradients reach the inputs only, as ``frozen_call``).

    Returns:
        Tensor: logits (K, B, 1, h, w), entry k = D_k(x_k).
    """
    _check_fc_discriminators(discriminators, inputs)
    specs, slope = _fc_layer_specs(discriminators)
    groups = len(discriminators)
    x = inputs
    for i, (weight, bias, conv) in enumerate(specs):
        if detach_params:
            weight, bias = weight.detach(), bias.detach()
        if i > 0:
            x = F.leaky_relu(x, slope, inplace=True)
        x = F.conv2d(x, weight, bias, conv.stride, conv.padding,
                     conv.dilation, groups=groups)
    # (B, K, h, w) -> (K, B, 1, h, w)
    return x.transpose(0, 1).unsqueeze(2)


class _DualPass:
    """One forward of a conv/LeakyReLU stack without autograd, with the
    activations kept for two separate backwards (see
    :func:`fc_discriminator_dual_pass`). The backwards call the kernels
    autograd's ``ConvolutionBackward0`` and ``LeakyReluBackward1`` call,
    with the same output masks, so gradients equal those of two autograd
    passes."""

    def __init__(self, inputs: Tensor, specs, slope: float, groups: int):
        self.specs = [(w.detach(), b.detach(), conv)
                      for w, b, conv in specs]
        self.slope = slope
        self.groups = groups
        # acts[i]: the input of conv i (after the previous LeakyReLU)
        self.acts = []
        with torch.no_grad():
            x = inputs.detach()
            for i, (weight, bias, conv) in enumerate(self.specs):
                if i > 0:
                    x = F.leaky_relu(x, slope)
                self.acts.append(x)
                x = F.conv2d(x, weight, bias, conv.stride, conv.padding,
                             conv.dilation, groups=groups)
        self.output = x

    def _conv_backward(self, i: int, grad: Tensor, mask):
        weight, _, conv = self.specs[i]
        return torch.ops.aten.convolution_backward(
            grad, self.acts[i], weight, [weight.shape[0]], conv.stride,
            conv.padding, conv.dilation, False, [0, 0], self.groups, mask)

    def _through_activation(self, i: int, grad: Tensor) -> Tensor:
        return torch.ops.aten.leaky_relu_backward(grad, self.acts[i],
                                                  self.slope, True)

    def input_grad(self, grad: Tensor) -> Tensor:
        for i in reversed(range(len(self.specs))):
            grad = self._conv_backward(i, grad, [True, False, False])[0]
            if i > 0:
                grad = self._through_activation(i, grad)
        return grad

    def param_grads(self, grad: Tensor):
        out = []
        for i in reversed(range(len(self.specs))):
            g_in, g_w, g_b = self._conv_backward(i, grad, [i > 0, True, True])
            out = [g_w, g_b] + out
            if i > 0:
                grad = self._through_activation(i, g_in)
        return out


class _ThroughInput(torch.autograd.Function):
    """The dual pass's output, differentiable w.r.t. the input only."""

    @staticmethod
    def forward(ctx, inputs: Tensor, state: _DualPass) -> Tensor:
        ctx.state = state
        return state.output.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        return ctx.state.input_grad(grad.contiguous()), None


class _ThroughParams(torch.autograd.Function):
    """The dual pass's output, differentiable w.r.t. the parameters only."""

    @staticmethod
    def forward(ctx, state: _DualPass, *params: Tensor) -> Tensor:
        ctx.state = state
        return state.output.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        return (None, *ctx.state.param_grads(grad.contiguous()))


def fc_discriminator_dual_pass(discriminators: Sequence[FCDiscriminator],
                               inputs: Tensor) -> Tuple[Tensor, Tensor]:
    """One forward of D (or of D_1..D_K grouped) on ``inputs``, returned
    twice: ``through_input`` carries gradients to ``inputs`` only (the
    generator's adversarial loss: D frozen, as ``frozen_call``),
    ``through_params`` to the parameters only (the discriminator's loss on
    the detached input). Both adversarial objectives see the same target
    logits, so the second forward that two separate passes would compute
    is saved; each backward can run on its own (the segmentor and the
    discriminator objectives are back-propagated separately).

    Args:
        discriminators (Sequence[FCDiscriminator]): one D, or D_1..D_K
            evaluated as one grouped convolution per layer.
        inputs (Tensor): (B, K·C, H, W).

    Returns:
        tuple: ``through_input``, ``through_params``: logits (B, K, h, w).
    """
    _check_fc_discriminators(discriminators, inputs)
    specs, slope = _fc_layer_specs(discriminators)
    state = _DualPass(inputs, specs, slope, groups=len(discriminators))
    params = [t for w, b, _ in specs for t in (w, b)]
    return (_ThroughInput.apply(inputs, state),
            _ThroughParams.apply(state, *params))
