"""Stochastic gradient descent with momentum."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from visionlab.scratch.layers import Parameter
from visionlab.utils.errors import ConfigError


class SGD:
    """p <- p - lr * v, with v <- momentum * v + grad (v starts as the first gradient).

    This is torch.optim.SGD's form. Keras writes v <- momentum * v - lr * grad and
    p <- p + v: the same steps while lr stays constant (v is scaled by -lr).
    Momentum lets steps that agree build up speed while steps that alternate cancel out,
    damping the zig-zag across a narrow valley of the loss.
    """

    def __init__(self, params: Iterable[Parameter], lr: float, momentum: float = 0.0) -> None:
        if lr <= 0:
            raise ConfigError(f"lr={lr} must be > 0")
        if not 0 <= momentum < 1:
            raise ConfigError(f"momentum={momentum} must be in [0, 1)")
        self.params = list(params)
        self.lr, self.momentum = lr, momentum
        self.velocity: list[torch.Tensor | None] = [None] * len(self.params)

    def step(self) -> None:
        """Update every parameter from the gradient its layer's backward() left in .grad."""
        for i, p in enumerate(self.params):
            if p.grad is None:
                raise ValueError("a parameter has no gradient: call backward() before step()")
            update = p.grad
            if self.momentum:
                v = self.velocity[i]
                update = self.velocity[i] = p.grad.clone() if v is None else v.mul_(self.momentum).add_(p.grad)
            p.value.sub_(self.lr * update)
