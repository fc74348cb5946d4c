"""The notes' convolutional network: Conv blocks with pooling, then a dense head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from visionlab.models.activations import ACTIVATIONS, make_activation
from visionlab.models.init import INITS, initialize
from visionlab.models.mlp import dense_block
from visionlab.utils.checks import Check, fraction, integer, one_of, sizes
from visionlab.utils.errors import ConfigError


class CNN(nn.Module):
    """Conv -> [BatchNorm2d] -> activation -> MaxPool(2) blocks, Flatten, dense layers, classes.

    The flattened size is inferred by running a dummy input once, so any channel count and
    image size the depth allows works; an image too small for the depth fails here, at
    construction, rather than halfway through training.
    """

    CHECKS: ClassVar[tuple[Check, ...]] = (
        sizes("channels", allow_empty=False),
        sizes("dense", allow_empty=True),
        integer("kernel_size", 1),
        one_of("activation", ACTIVATIONS),
        one_of("init", INITS),
        fraction("dropout"),
    )

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (32, 64, 128),
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | str = 1,
        dilation: int = 1,
        dense: Sequence[int] = (128, 64),
        activation: str = "relu",
        batch_norm: bool = True,
        dropout: float = 0.5,
        init: str = "torch",
    ) -> None:
        super().__init__()
        if not channels:
            raise ConfigError("model.channels=[] is empty; give at least one conv block")
        in_ch = input_shape[0]
        blocks: list[nn.Module] = []
        for out_ch in channels:
            blocks.append(
                nn.Conv2d(
                    in_ch, out_ch, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=not batch_norm
                )
            )
            if batch_norm:
                blocks.append(nn.BatchNorm2d(out_ch))
            blocks += [make_activation(activation), nn.MaxPool2d(2)]
            in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        flat = self._flat_size(tuple(input_shape), len(channels))
        head: list[nn.Module] = [nn.Flatten()]
        width = flat
        for size in dense:
            head += dense_block(width, size, activation, False, dropout)
            width = size
        head.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*head)
        initialize(self, init)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes

    def _flat_size(self, input_shape: tuple[int, ...], depth: int) -> int:
        probe = torch.zeros(1, *input_shape)
        try:
            with torch.no_grad():
                out = self.features.eval()(probe)
        except RuntimeError as err:
            out = None
            reason = str(err).splitlines()[0]
        else:
            reason = f"the last block's output is {tuple(out.shape[1:])}"
        self.features.train()
        if out is None or out.numel() == 0:
            size = "x".join(map(str, input_shape))
            raise ConfigError(
                f"input {size} is too small for {depth} conv blocks ({reason}); "
                "use a larger image, fewer model.channels, or padding"
            )
        return out.numel()

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
