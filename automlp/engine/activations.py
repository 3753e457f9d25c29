"""The one activation registry: for each name of `automlp.registry.ACTIVATIONS`, the nn.Module `build_mlp`
puts in a net, the function the stacked nets call, and the forward/backward the hand-written kernel runs.

The kernel's backward passes are ATen's own (what autograd calls), written into the incoming gradient in place.
Where the derivative comes from the output (relu, tanh, sigmoid, ...), the forward may run in place on the
pre-activation, so the pre-activation need not be kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_aten = torch.ops.aten


@dataclass(frozen=True)
class Activation:
    module: type[nn.Module]
    fn: Callable[[torch.Tensor], torch.Tensor]  # what nn.Module(...) computes with its default arguments
    inplace: bool  # the kernel may overwrite the pre-activation: the backward needs only the output
    forward: Callable  # (z, module) -> a
    backward: Callable  # (grad, a, z, module) -> grad w.r.t. z, in place where possible
    zero_at_zero: bool = True  # act(0) == 0: zero-padded units of a stacked net stay silent


ACTIVATIONS: dict[str, Activation] = {
    "identity": Activation(nn.Identity, lambda x: x, True, lambda z, m: z, lambda g, a, z, m: g),
    "logistic": Activation(nn.Sigmoid, torch.sigmoid, True, lambda z, m: z.sigmoid_(),
                           lambda g, a, z, m: _aten.sigmoid_backward.grad_input(g, a, grad_input=g),
                           zero_at_zero=False),
    "tanh": Activation(nn.Tanh, torch.tanh, True, lambda z, m: z.tanh_(),
                       lambda g, a, z, m: _aten.tanh_backward.grad_input(g, a, grad_input=g)),
    "relu": Activation(nn.ReLU, F.relu, True, lambda z, m: z.relu_(),
                       lambda g, a, z, m: _aten.threshold_backward.grad_input(g, a, 0.0, grad_input=g)),
    "leaky_relu": Activation(  # slope 0.01, as nn.LeakyReLU()
        nn.LeakyReLU, F.leaky_relu, True, lambda z, m: F.leaky_relu_(z, m.negative_slope),
        lambda g, a, z, m: _aten.leaky_relu_backward.grad_input(g, a, m.negative_slope, True, grad_input=g)),
    "gelu": Activation(  # the exact erf form, as nn.GELU()
        nn.GELU, F.gelu, False, lambda z, m: F.gelu(z, approximate=m.approximate),
        lambda g, a, z, m: _aten.gelu_backward.grad_input(g, z, approximate=m.approximate, grad_input=g)),
    "silu": Activation(nn.SiLU, F.silu, False, lambda z, m: F.silu(z),
                       lambda g, a, z, m: _aten.silu_backward.grad_input(g, z, grad_input=g)),
}

BY_MODULE: dict[type[nn.Module], Activation] = {a.module: a for a in ACTIVATIONS.values()}


def activation_module(name: str) -> nn.Module:
    return ACTIVATIONS[name].module()
