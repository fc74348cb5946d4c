"""The notes' dense network: Flatten, then Dense blocks, then the class scores."""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import ClassVar

from torch import Tensor, nn

from visionlab.models.activations import ACTIVATIONS, make_activation
from visionlab.models.init import INITS, initialize
from visionlab.utils.checks import Check, fraction, one_of, sizes
from visionlab.utils.errors import ConfigError


def dense_block(n_in: int, n_out: int, activation: str, batch_norm: bool, dropout: float) -> list[nn.Module]:
    """Linear, optional BatchNorm1d, activation, optional Dropout (the Keras order of the notes)."""
    layers: list[nn.Module] = [nn.Linear(n_in, n_out, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(n_out))
    layers.append(make_activation(activation))
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return layers


class MLP(nn.Sequential):
    """Multi-layer perceptron over flattened images.

    With `hidden=[300, 100]`, ReLU, no BatchNorm and no Dropout on 1x28x28 inputs and
    10 classes it has the 266,610 parameters of the notes' Keras model (and its start with
    `init="glorot_uniform"`, see visionlab.models.init).
    """

    CHECKS: ClassVar[tuple[Check, ...]] = (
        sizes("hidden", allow_empty=False),
        one_of("activation", ACTIVATIONS),
        one_of("init", INITS),
        fraction("dropout"),
    )

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden: Sequence[int] = (300, 100),
        activation: str = "relu",
        batch_norm: bool = False,
        dropout: float = 0.0,
        init: str = "torch",
    ) -> None:
        if not hidden:
            raise ConfigError("model.hidden=[] is empty; give at least one hidden layer size")
        layers: list[nn.Module] = [nn.Flatten()]
        width = prod(input_shape)
        for size in hidden:
            layers += dense_block(width, size, activation, batch_norm, dropout)
            width = size
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)
        initialize(self, init)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 - same as nn.Sequential, typed
        return super().forward(x)
