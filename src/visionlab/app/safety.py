"""Run folders are data: what a config read from a file may instantiate.

A run folder (its `.hydra/config.yaml`, `overrides.yaml`, its checkpoints) may come from
someone else, as a zip or on a shared disk. Hydra's `instantiate` calls whatever a
`_target_` names, so a target from such a file is allowed only when it is a class of a
short list of packages, checked before anything is imported from it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from visionlab.utils.errors import ConfigError

# Classes under these prefixes build models, data, optimizers, schedulers, callbacks,
# loggers and transforms; none of them runs code named by its arguments.
ALLOWED_PREFIXES = (
    "visionlab.",
    "torch.optim.",
    "lightning.pytorch.callbacks.",
    "lightning.pytorch.loggers.",
    "lightning.Trainer",
    "torchvision.transforms.",
    "torchvision.models.",
)


def resolve_target(target: str, where: str, base: type | None = None) -> type:
    """The class `target` names, if it is on the allowlist (and a subclass of `base`)."""
    if not isinstance(target, str) or not target.startswith(ALLOWED_PREFIXES) or ".." in target:
        raise ConfigError(f"{where}={target!r} is not allowed from a run folder or checkpoint; "
                          f"allowed: classes of {', '.join(p.rstrip('.') for p in ALLOWED_PREFIXES)}")
    module_name, _, name = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        raise ConfigError(f"{where}={target!r} names no class") from None
    if not isinstance(obj, type) or (base is not None and not issubclass(obj, base)):
        kind = f"a subclass of {base.__name__}" if base is not None else "a class"
        raise ConfigError(f"{where}={target!r} is not allowed from a run folder or checkpoint; expected {kind}")
    return obj


def check_targets(node: Any, where: str, base: type | None = None) -> None:
    """Refuse any `_target_` in `node` (a config from a file) that is not allowed.

    `base`, when given, is required of the top-level target only (a data config must name
    a DataModule); nested targets must be allowed classes.
    """
    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=False)
    if isinstance(node, Mapping):
        if "_target_" in node:
            resolve_target(node["_target_"], f"{where}._target_", base)
        for key, value in node.items():
            if key != "_target_":
                check_targets(value, f"{where}.{key}")
    elif isinstance(node, Sequence) and not isinstance(node, str):
        for i, value in enumerate(node):
            check_targets(value, f"{where}[{i}]")
