"""Activation layers by name, so a config can say `activation: elu`."""

from __future__ import annotations

from torch import nn

from visionlab.utils.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module for `name`; unknown names list the allowed ones."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(f"activation={name!r} is unknown; allowed: {', '.join(ACTIVATIONS)}") from None
