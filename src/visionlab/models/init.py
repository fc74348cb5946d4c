"""Weight initialisation by name, so a config can start a net the way Keras does.

PyTorch and Keras start dense and conv layers differently: PyTorch draws weights and biases
from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (Kaiming uniform with a=sqrt(5)), Keras draws
weights with Glorot uniform and sets biases to zero. Deep ReLU or sigmoid stacks trained with
plain SGD start much faster from Glorot or He, so reproducing the notes' Keras runs needs it.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from visionlab.utils.errors import ConfigError
from visionlab.utils.torch_seams import fan_in_and_out

# name -> (scale, fan mode, distribution), Keras' VarianceScaling arguments
SCHEMES: dict[str, tuple[float, str, str]] = {
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "glorot_normal": (1.0, "fan_avg", "truncated_normal"),
    "he_uniform": (2.0, "fan_in", "uniform"),
    "he_normal": (2.0, "fan_in", "truncated_normal"),
}
INITS = ("torch", *SCHEMES)
# std of a unit normal truncated to +-2, which Keras divides out so the draw keeps its variance
_TRUNCATED_STD = 0.87962566103423978


def variance_scaling_(weight: Tensor, scale: float, mode: str, distribution: str) -> None:
    """Keras' VarianceScaling: variance scale / n, n the fan in or the mean of fan in and out."""
    fan_in, fan_out = fan_in_and_out(weight)
    n = fan_in if mode == "fan_in" else (fan_in + fan_out) / 2
    if distribution == "uniform":
        limit = math.sqrt(3.0 * scale / n)
        nn.init.uniform_(weight, -limit, limit)
    else:
        std = math.sqrt(scale / n) / _TRUNCATED_STD
        nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)


def initialize(net: nn.Module, name: str) -> None:
    """Re-draw every Linear and Conv weight by scheme `name`, biases zero; 'torch' keeps PyTorch's."""
    if name not in INITS:
        raise ConfigError(f"model.init={name!r} is unknown; allowed: {', '.join(INITS)}")
    if name == "torch":
        return
    for module in net.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            variance_scaling_(module.weight, *SCHEMES[name])
            if module.bias is not None:
                nn.init.zeros_(module.bias)
