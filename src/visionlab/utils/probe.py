"""One forward pass that watches chosen layers: what the model summary, the memory check
and Grad-CAM's layer choice learn about a net without training it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

Record = Callable[[nn.Module, Any], None]  # (layer, its output), once per call of the layer


def leaf_modules(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of the modules of `net` that hold no others, in definition order."""
    return [(name, m) for name, m in net.named_modules() if next(m.children(), None) is None]


def forward_probe(net: nn.Module, x: Tensor, layers: Iterable[nn.Module], record: Record) -> None:
    """Run `x` through `net` once, calling `record(layer, output)` for every call of one of
    `layers`. In eval mode without gradients, so BatchNorm's statistics are untouched and
    nothing is kept for backward; the net's mode and hooks are restored after."""
    hooks = [layer.register_forward_hook(lambda mod, _args, out: record(mod, out)) for layer in layers]
    was_training = net.training
    try:
        with torch.no_grad():
            net.eval()(x)
    finally:
        net.train(was_training)
        for hook in hooks:
            hook.remove()
