"""The private names of torchvision visionlab uses, each reached through one function here.

visionlab applies RandAugment / TrivialAugmentWide per image from its own table of draws
(visionlab.data.transforms), so it needs a policy's table of operations and the function
that applies one; torchvision keeps both private. tests/test_seams.py fails loudly when the
pinned version changes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor
from torchvision.transforms import v2

# an operation's magnitudes for (bins, height, width), or None; and whether it takes a sign
Operation = tuple[Callable[[int, int, int], Tensor | None], bool]


def augmentation_space(policy: v2.RandAugment | v2.TrivialAugmentWide) -> Mapping[str, Operation]:
    """The policy's operations by name, in torchvision's order."""
    space: Mapping[str, Any] = policy._AUGMENTATION_SPACE
    return space


def apply_operation(
    policy: v2.RandAugment | v2.TrivialAugmentWide, images: Tensor, name: str, magnitude: float
) -> Tensor:
    """Operation `name` at `magnitude` on uint8 `images`, with the policy's interpolation and fill."""
    out: Tensor = policy._apply_image_or_video_transform(
        images, name, magnitude, interpolation=policy.interpolation, fill=policy._fill
    )
    return out
