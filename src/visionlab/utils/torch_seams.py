"""The private names of torch visionlab uses, each reached through one function here.

tests/test_seams.py fails loudly when the pinned torch version renames or changes one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles): torch's own
    capability probes, which it keeps private in `torch.cpu`."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def fan_in_and_out(weight: Tensor) -> tuple[int, int]:
    """(fan in, fan out) of a weight as torch's own initialisers compute them."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    return int(fan_in), int(fan_out)
