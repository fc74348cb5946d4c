"""Layers with a hand-written backward pass, and a Sequential that chains them.

Every layer keeps what its forward pass saw, so `backward(grad)` can take the gradient of
the loss with respect to its output and return the gradient with respect to its input,
leaving the gradients of its own weights in `Parameter.grad` for the optimizer. That is
the chain rule applied layer by layer, backwards: backpropagation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from visionlab.models.activations import ACTIVATIONS as TORCH_ACTIVATIONS
from visionlab.scratch.activations import get_activation
from visionlab.scratch.conv import Pair, conv2d, conv2d_backward, max_pool2d, max_pool2d_backward
from visionlab.utils.errors import ConfigError


@dataclass
class Parameter:
    """A weight tensor and the gradient the last backward pass wrote for it."""

    value: Tensor
    grad: Tensor | None = None


class Layer:
    """forward(x) -> y; backward(dL/dy) -> dL/dx, filling each parameter's grad."""

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def backward(self, grad: Tensor) -> Tensor:
        raise NotImplementedError

    def parameters(self) -> list[Parameter]:
        return []

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)


def _glorot(
    shape: tuple[int, ...], fan_in: int, fan_out: int, generator: torch.Generator | None, dtype: torch.dtype
) -> Tensor:
    """Keras' default initialiser: uniform in +-sqrt(6 / (fan_in + fan_out))."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * limit


class Dense(Layer):
    """The notes' NaiveDense, activation(x @ W + b), with its backward pass.

    W is (inputs, outputs) as in Keras, the transpose of nn.Linear.weight. The notes draw
    W from uniform(0, 0.1); every weight positive makes hidden units start out alike, so
    this uses the symmetric Glorot range Keras defaults to.
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        activation: str = "identity",
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.activation_name, self.activation = activation, get_activation(activation)
        self.W = Parameter(_glorot((n_in, n_out), n_in, n_out, generator, dtype))
        self.b = Parameter(torch.zeros(n_out, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        self.x = x
        self.z = x @ self.W.value + self.b.value
        self.y = self.activation.forward(self.z)
        return self.y

    def backward(self, grad: Tensor) -> Tensor:
        grad_z = self.activation.backward(self.z, self.y, grad)
        self.W.grad = self.x.T @ grad_z  # each weight: its input times the gradient at its output
        self.b.grad = grad_z.sum(dim=0)
        return grad_z @ self.W.value.T

    def parameters(self) -> list[Parameter]:
        return [self.W, self.b]


class Conv2d(Layer):
    """activation(conv2d(x, W) + b), W of shape (out, in, kH, kW) as in nn.Conv2d."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: Pair = 1,
        padding: Pair = 0,
        activation: str = "identity",
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.activation_name, self.activation = activation, get_activation(activation)
        self.stride, self.padding = stride, padding
        area = kernel_size * kernel_size
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.W = Parameter(_glorot(shape, in_channels * area, out_channels * area, generator, dtype))
        self.b = Parameter(torch.zeros(out_channels, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        self.x = x
        self.z = conv2d(x, self.W.value, self.b.value, self.stride, self.padding)
        self.y = self.activation.forward(self.z)
        return self.y

    def backward(self, grad: Tensor) -> Tensor:
        grad_z = self.activation.backward(self.z, self.y, grad)
        grad_x, self.W.grad, self.b.grad = conv2d_backward(grad_z, self.x, self.W.value, self.stride, self.padding)
        return grad_x

    def parameters(self) -> list[Parameter]:
        return [self.W, self.b]


class MaxPool2d(Layer):
    """Max over each kernel x kernel window; the gradient goes to the winning pixel."""

    def __init__(self, kernel_size: Pair, stride: Pair | None = None) -> None:
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: Tensor) -> Tensor:
        self.shape = x.shape
        y, self.index = max_pool2d(x, self.kernel_size, self.stride)
        return y

    def backward(self, grad: Tensor) -> Tensor:
        return max_pool2d_backward(grad, self.index, self.shape)


class Flatten(Layer):
    """(N, ...) -> (N, features); backward restores the shape."""

    def forward(self, x: Tensor) -> Tensor:
        self.shape = x.shape
        return x.reshape(len(x), -1)

    def backward(self, grad: Tensor) -> Tensor:
        return grad.reshape(self.shape)


class Sequential(Layer):
    """The notes' NaiveSequential, plus the backward pass: layers in reverse order."""

    def __init__(self, layers: Sequence[Layer]) -> None:
        self.layers = list(layers)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    @torch.no_grad()
    def backward(self, grad: Tensor) -> Tensor:
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        return grad

    def parameters(self) -> list[Parameter]:
        return [p for layer in self.layers for p in layer.parameters()]


def from_torch(module: nn.Module, dtype: torch.dtype = torch.float64) -> Sequential:
    """A by-hand copy of a torch network built from Flatten, Linear, Conv2d, MaxPool2d and
    activations (visionlab's MLP, a plain CNN), with the same weights as `dtype` copies.

    An activation module is folded into the Linear or Conv2d just before it, the way
    Keras layers carry their activation.
    """
    names = {cls: name for name, cls in TORCH_ACTIVATIONS.items()}
    layers: list[Layer] = []
    for m in _leaves(module):
        if type(m) in names:
            last = layers[-1] if layers else None
            if not isinstance(last, (Dense, Conv2d)) or last.activation_name != "identity":
                raise ConfigError(f"{m} must follow a Linear or Conv2d that has no activation yet")
            last.activation_name, last.activation = names[type(m)], get_activation(names[type(m)])
        elif isinstance(m, nn.Flatten):
            layers.append(Flatten())
        elif isinstance(m, nn.Linear):
            layer = Dense(m.in_features, m.out_features, dtype=dtype)
            layer.W.value = m.weight.detach().T.to(dtype).contiguous()
            layer.b.value = _bias(m, m.out_features, dtype)
            layers.append(layer)
        elif isinstance(m, nn.Conv2d) and m.groups == 1 and m.dilation == (1, 1) and isinstance(m.padding, tuple):
            conv = Conv2d(
                m.in_channels,
                m.out_channels,
                m.kernel_size[0],
                (m.stride[0], m.stride[1]),
                (int(m.padding[0]), int(m.padding[1])),
                dtype=dtype,
            )
            conv.W.value = m.weight.detach().to(dtype).clone()
            conv.b.value = _bias(m, m.out_channels, dtype)
            layers.append(conv)
        elif isinstance(m, nn.MaxPool2d) and m.padding == 0 and m.dilation == 1 and not m.ceil_mode:
            layers.append(MaxPool2d(m.kernel_size, m.stride))
        else:
            raise ConfigError(
                f"{type(m).__name__} has no by-hand version; supported: Flatten, Linear, "
                "Conv2d, MaxPool2d (plain settings) and the activations"
            )
    return Sequential(layers)


def _leaves(module: nn.Module) -> Iterable[nn.Module]:
    children = list(module.children())
    if not children:
        yield module
    for child in children:
        yield from _leaves(child)


def _bias(m: nn.Linear | nn.Conv2d, size: int, dtype: torch.dtype) -> Tensor:
    return torch.zeros(size, dtype=dtype) if m.bias is None else m.bias.detach().to(dtype).clone()
