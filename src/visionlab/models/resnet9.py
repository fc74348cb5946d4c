"""A small residual net built for time to accuracy (the ResNet-9 of the DAWNBench / airbench
CIFAR-10 speedruns, sized for 28x28 and 32x32 images): few layers, BatchNorm, pooling
early so most convolutions run on small maps, a max-pooled head and a scaled linear layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from visionlab.utils.checks import Check, Lookup, positive, sizes
from visionlab.utils.errors import ConfigError


def conv_bn(in_ch: int, out_ch: int) -> nn.Sequential:
    """3x3 convolution (no bias: BatchNorm has one), BatchNorm, ReLU."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU())


class Residual(nn.Module):
    """x + two conv_bn blocks of x: the shortcut that lets the short schedule train deep enough."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _flags(v: object) -> bool:
    return isinstance(v, Sequence) and not isinstance(v, str) and all(isinstance(b, bool) for b in v)


class ResNet9(nn.Module):
    """A stem conv_bn, then per stage conv_bn, 2x2 max-pool and, where `residual` says, a
    Residual block; a global max-pool and a linear layer whose output is multiplied by
    `head_scale` (small logits at start: the short, high learning rate schedule stays stable).

    widths: the stem's channels, then one entry per stage (three stages take 28x28 to 3x3).
    """

    CHECKS: ClassVar[tuple[Check, ...]] = (
        sizes("widths", allow_empty=False),
        positive("head_scale"),
        Check("residual", _flags, "a list of true/false, one per stage (len(widths) - 1)"),
    )

    @staticmethod
    def check_config(lookup: Lookup) -> None:
        """One residual flag per stage, refused before any data is read."""
        widths, residual = lookup("model.widths"), lookup("model.residual")
        if isinstance(widths, list) and widths and isinstance(residual, list) and len(residual) != len(widths) - 1:
            raise ConfigError(
                f"model.residual={residual} has {len(residual)} flag(s); expected one per stage: "
                f"{len(widths) - 1} for model.widths={widths} (the first width is the stem's)"
            )

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        widths: Sequence[int] = (32, 64, 128, 256),
        residual: Sequence[bool] = (True, False, True),
        head_scale: float = 0.125,
    ) -> None:
        super().__init__()
        if len(widths) < 2 or len(residual) != len(widths) - 1:
            raise ValueError(
                f"model.widths={list(widths)} with model.residual={list(residual)}: give the stem's width "
                "and at least one stage, and one residual flag per stage"
            )
        layers: list[nn.Module] = [conv_bn(input_shape[0], widths[0])]
        for in_ch, out_ch, res in zip(widths, widths[1:], residual):
            layers += [conv_bn(in_ch, out_ch), nn.MaxPool2d(2)]
            if res:
                layers.append(Residual(out_ch))
        self.features = nn.Sequential(*layers)
        side = min(input_shape[1:]) // 2 ** (len(widths) - 1)
        if side < 1:
            size = "x".join(map(str, input_shape))
            raise ValueError(
                f"input {size} is too small for {len(widths) - 1} pooling stages; "
                "use fewer model.widths or a larger image"
            )
        self.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(widths[-1], num_classes, bias=False))
        self.head_scale = head_scale
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)) * self.head_scale

    @torch.no_grad()
    def macs(self) -> int:
        """Multiply-accumulates of one forward pass of one image (convolutions and the head)."""
        total = 0

        def count(module: nn.Module, _: tuple[Tensor, ...], out: Tensor) -> None:
            nonlocal total
            if isinstance(module, nn.Conv2d):
                total += out[0].numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]
            elif isinstance(module, nn.Linear):
                total += module.in_features * module.out_features

        hooks = [m.register_forward_hook(count) for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        training = self.training
        try:
            self.eval()(torch.zeros(1, *self.input_shape))
        finally:
            self.train(training)
            for h in hooks:
                h.remove()
        return total
