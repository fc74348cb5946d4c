"""Sizes checked against the machine before anything large is allocated.

A batch size or an image size that cannot fit used to run until the kernel's out-of-memory
killer ended the process, minutes later and without a word; these checks refuse it first,
with the estimate in the message.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from visionlab.utils.errors import ConfigError
from visionlab.utils.probe import forward_probe, leaf_modules

# Training keeps each layer's output for backward and a gradient of the same size, and the
# optimizer and temporaries take more: about three float32 copies of the activations.
TRAINING_COPIES = 3


def available_bytes(device: torch.device | str = "cpu") -> int:
    """Memory a new allocation can get now: free GPU memory, or the kernel's MemAvailable."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62  # unknown: do not refuse


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def activation_bytes_per_image(net: nn.Module, input_shape: Sequence[int]) -> int:
    """float32 bytes of every layer's output for one image, measured on a batch of two."""
    total = 0

    def count(module: nn.Module, out: object) -> None:
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel()

    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    forward_probe(net, torch.zeros(2, *input_shape, device=device), [m for _, m in leaf_modules(net)], count)
    return total * 4 // 2


def check_batch_fits(
    net: nn.Module,
    input_shape: Sequence[int],
    batch_size: int,
    device: torch.device | str = "cpu",
    key: str = "data.batch_size",
) -> None:
    """Refuse a training batch whose activations would not fit in the device's memory."""
    per_image = activation_bytes_per_image(net, input_shape)
    need = per_image * batch_size * TRAINING_COPIES
    free = available_bytes(device)
    if need > free:
        raise ConfigError(
            f"{key}={batch_size} needs about {gib(need)} to train {type(net).__name__} "
            f"({per_image / 2**20:.2f} MiB of activations per image, x{TRAINING_COPIES}), more than "
            f"the {gib(free)} available on {device}; use a smaller {key}"
        )


def check_decoded_fits(count: int, shape: Sequence[int], what: str, key: str) -> None:
    """Refuse decoding `count` uint8 images of `shape` into memory when they cannot fit."""
    need = count
    for s in shape:
        need *= int(s)
    free = available_bytes("cpu")
    if need > free:
        raise ConfigError(
            f"{key}: {what}: {count} images of {tuple(shape)} need {gib(need)} decoded, more than "
            f"the {gib(free)} of memory available; use a smaller {key}"
        )
