"""Reader for the python version of CIFAR-10: pickled batches plus `batches.meta`."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from visionlab.utils.errors import ConfigError

# The batches hold numpy arrays; nothing else may be built while unpickling them.
_ALLOWED = {
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _load(path: Path) -> dict[bytes, Any]:
    try:
        with open(path, "rb") as fh:
            obj = _ArraysOnly(fh, encoding="bytes").load()  # written by Python 2's cPickle
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as err:
        raise ConfigError(f"{path}: not a CIFAR python batch ({err})") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{path}: not a CIFAR python batch (holds {type(obj).__name__}, not a dict)")
    return obj


def read_cifar_batch(path: str | Path, size: int = 32) -> tuple[Tensor, Tensor]:
    """uint8 images (N, 3, size, size) and int64 labels of one pickled batch."""
    path = Path(path)
    batch = _load(path)
    try:
        data, labels = np.asarray(batch[b"data"], dtype=np.uint8), batch[b"labels"]
    except KeyError as err:
        raise ConfigError(f"{path}: CIFAR batch lacks the key {err.args[0]!r}") from None
    if data.ndim != 2 or data.shape[1] != 3 * size * size or len(data) != len(labels):
        raise ConfigError(f"{path}: data {data.shape} and {len(labels)} labels are not N x {3 * size * size} and N")
    images = torch.from_numpy(data.reshape(-1, 3, size, size).copy())  # rows are R, G, B planes
    return images, torch.as_tensor(labels, dtype=torch.int64)


def read_cifar_meta(path: str | Path) -> tuple[str, ...]:
    """Class names, in label order, from `batches.meta`."""
    meta = _load(Path(path))
    if b"label_names" not in meta:
        raise ConfigError(f"{path}: CIFAR meta lacks the key b'label_names'")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[b"label_names"])
