"""Small functional helpers shared by methods."""
import torch
from torch import Tensor, nn


def frozen_call(module: nn.Module, *args) -> Tensor:
    """Call ``module`` with its parameters detached.

    The output is differentiable w.r.t. the inputs but the graph never
    reaches the module's parameters: the adversarial generator loss passes
    through a discriminator without giving it gradients (AdaptSegNet sets
    ``requires_grad=False`` on D for the same effect), so the generator and
    discriminator objectives can be back-propagated in one iteration.
    """
    state = {name: p.detach() for name, p in module.named_parameters()}
    state.update(module.named_buffers())
    return torch.func.functional_call(module, state, args)
