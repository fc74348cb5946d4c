"""Activations and their derivatives, written out by hand.

Each activation is a pair: `forward(x)` and `backward(x, y, grad)`, the gradient with
respect to the input given the input `x`, the output `y` and the upstream gradient. For
the element-wise ones that is `grad * f'(x)`; softmax mixes a row, so its backward is a
Jacobian-vector product instead.

The notes write the sigmoid's derivative in terms of its *output*, `y * (1 - y)`
(`nonlin(l1, deriv=True)`); here the `*_grad` functions take the *input* `x`, the usual
textbook form, and `sigmoid_grad(x) == s * (1 - s)` with `s = sigmoid(x)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from visionlab.utils.errors import ConfigError


def sigmoid(x: Tensor) -> Tensor:
    """1 / (1 + e^-x). (The notes' formula text has e^x: the code has the right sign.)"""
    return 1.0 / (1.0 + torch.exp(-x))


def sigmoid_grad(x: Tensor) -> Tensor:
    s = sigmoid(x)
    return s * (1.0 - s)


def relu(x: Tensor) -> Tensor:
    """max(0, x)."""
    return x.clamp_min(0.0)


def relu_grad(x: Tensor) -> Tensor:
    """1 where x > 0, else 0 (at exactly 0 PyTorch also takes 0)."""
    return (x > 0).to(x.dtype)


def leaky_relu(x: Tensor, slope: float = 0.01) -> Tensor:
    """x where x > 0, else slope * x: negative inputs keep a small gradient."""
    return torch.where(x > 0, x, slope * x)


def leaky_relu_grad(x: Tensor, slope: float = 0.01) -> Tensor:
    return torch.where(x > 0, torch.ones_like(x), torch.full_like(x, slope))


def elu(x: Tensor, alpha: float = 1.0) -> Tensor:
    """x where x > 0, else alpha * (e^x - 1): smooth, with negative outputs."""
    return torch.where(x > 0, x, alpha * torch.expm1(x.clamp_max(0.0)))


def elu_grad(x: Tensor, alpha: float = 1.0) -> Tensor:
    return torch.where(x > 0, torch.ones_like(x), alpha * torch.exp(x.clamp_max(0.0)))


def tanh(x: Tensor) -> Tensor:
    """(e^x - e^-x) / (e^x + e^-x), computed as 2 sigmoid(2x) - 1 so large |x| cannot overflow."""
    return 2.0 * sigmoid(2.0 * x) - 1.0


def tanh_grad(x: Tensor) -> Tensor:
    return 1.0 - tanh(x) ** 2


def naive_softmax(x: Tensor) -> Tensor:
    """The notes' softmax: e^x over the sum of e^x of the *whole* matrix.

    Two problems: every row shares one denominator, so rows do not each sum to 1 (the
    whole matrix does), and e^x overflows to inf for x above ~88 (float32) or ~709
    (float64), giving nan. Kept to show both; use `softmax`.
    """
    e = torch.exp(x)
    return e / e.sum()


def softmax(x: Tensor) -> Tensor:
    """Row-wise softmax, numerically stable: subtracting each row's max changes nothing
    mathematically (it cancels in the ratio) but keeps every exponent <= 0."""
    e = torch.exp(x - x.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def softmax_backward(y: Tensor, grad: Tensor) -> Tensor:
    """Gradient through a row-wise softmax with output `y`: J^T grad, where
    J = diag(y) - y y^T, which works out to y * (grad - sum(grad * y))."""
    return y * (grad - (grad * y).sum(dim=-1, keepdim=True))


class Activation(NamedTuple):
    """forward(x) -> y and backward(x, y, grad) -> gradient with respect to x."""

    forward: Callable[[Tensor], Tensor]
    backward: Callable[[Tensor, Tensor, Tensor], Tensor]


def _elementwise(f: Callable[[Tensor], Tensor], df: Callable[[Tensor], Tensor]) -> Activation:
    return Activation(f, lambda x, y, grad: grad * df(x))


ACTIVATIONS: dict[str, Activation] = {
    "identity": Activation(lambda x: x, lambda x, y, grad: grad),
    "sigmoid": _elementwise(sigmoid, sigmoid_grad),
    "relu": _elementwise(relu, relu_grad),
    "leaky_relu": _elementwise(leaky_relu, leaky_relu_grad),
    "elu": _elementwise(elu, elu_grad),
    "tanh": _elementwise(tanh, tanh_grad),
    "softmax": Activation(softmax, lambda x, y, grad: softmax_backward(y, grad)),
}


def get_activation(name: str) -> Activation:
    """The activation called `name`; unknown names list the allowed ones."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ConfigError(f"activation={name!r} is unknown; allowed: {', '.join(ACTIVATIONS)}") from None
