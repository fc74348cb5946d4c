"""Reader for the idx format of MNIST and Fashion-MNIST (optionally gzipped)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from visionlab.utils.errors import ConfigError

_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path, ndim: int | None = None, uint8: bool = False) -> torch.Tensor:
    """The array stored in an idx file, as a tensor; a malformed file raises ValueError.

    `ndim` and `uint8` say what the caller expects (MNIST's images are 3-d uint8, its
    labels 1-d uint8): a file that claims anything else is refused, not reinterpreted.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise ConfigError(f"{path}: cannot read idx file ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise ConfigError(f"{path}: not an idx file (bad magic number)")
    if uint8 and raw[2] != 0x08:
        raise ConfigError(
            f"{path}: idx type byte is 0x{raw[2]:02x} ({np.dtype(_DTYPES[raw[2]]).name}); expected 0x08 (uint8)"
        )
    if ndim is not None and raw[3] != ndim:
        raise ConfigError(f"{path}: idx file has {raw[3]} dimensions; expected {ndim}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise ConfigError(f"{path}: idx file is {len(raw)} bytes, its header promises {expected} (truncated?)")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return torch.from_numpy(data.astype(dtype.newbyteorder("="), copy=True))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an idx file (gzipped when the name ends in .gz)."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        fh.write(header + array.tobytes())
