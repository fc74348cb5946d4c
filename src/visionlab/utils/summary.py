"""A Keras `model.summary()` for any nn.Module: layer, output shape, parameter count, totals."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from visionlab.utils.probe import forward_probe, leaf_modules


def _own_counts(module: nn.Module) -> tuple[int, int]:
    """(trainable, non-trainable) values held by `module` itself. Float buffers such as
    BatchNorm's running mean and variance count as non-trainable, as Keras counts them."""
    trainable = sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters(recurse=False) if not p.requires_grad)
    frozen += sum(b.numel() for b in module.buffers(recurse=False) if b.is_floating_point())
    return trainable, frozen


def model_summary(net: nn.Module, input_shape: Sequence[int], width: int = 72) -> str:
    """The table, made by running one dummy image through `net` in eval mode (so BatchNorm
    statistics are untouched); the batch dimension is shown as None, as in Keras."""
    rows: list[tuple[str, str, int]] = []
    leaves = leaf_modules(net)
    names = {module: name for name, module in leaves}

    def record(mod: nn.Module, out: object) -> None:
        shape = tuple(out.shape[1:]) if isinstance(out, Tensor) else ()
        rows.append((f"{names[mod]} ({type(mod).__name__})", str((None, *shape)), sum(_own_counts(mod))))

    param = next(net.parameters(), None)
    # the parameters' dtype: a net in float64 (trainer.precision=64-true) takes float64 inputs
    dtype = param.dtype if param is not None and param.is_floating_point() else None
    probe = torch.zeros(1, *input_shape, device=param.device if param is not None else "cpu", dtype=dtype)
    forward_probe(net, probe, [module for _, module in leaves], record)
    counts = [_own_counts(m) for m in net.modules()]
    trainable, frozen = sum(c[0] for c in counts), sum(c[1] for c in counts)
    line = lambda a, b, c: f"{a:<34}{b:<24}{c:>{width - 58}}"  # noqa: E731
    out = [f'Model: "{type(net).__name__}"', "_" * width, line("Layer (type)", "Output Shape", "Param #"), "=" * width]
    out += [line(n, s, f"{c:,}") for n, s, c in rows]
    out += [
        "=" * width,
        f"Total params: {trainable + frozen:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {frozen:,}",
        "_" * width,
    ]
    return "\n".join(out)
