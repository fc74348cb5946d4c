"""The one resolver of config `_target_`s, and the allow-lists that say who may build what.

A `_target_` names a class by its dotted path; Hydra's `instantiate` would import and call
whatever it names. visionlab resolves one itself where the config may come from a file
someone sent (a run folder, a checkpoint's metadata) or where only its own classes matter:
the name is checked against an allow-list before anything is imported from it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from torch import nn

from visionlab.utils.errors import ConfigError

NOT_ALLOWED, NO_CLASS, NOT_A_CLASS = "not allowed", "names no class", "not a class of the kind expected"


@dataclass(frozen=True)
class AllowList:
    """The classes a `_target_` may name: those whose dotted path starts with one of
    `prefixes`, and (when given) subclasses of `base`."""

    prefixes: tuple[str, ...]
    base: type | None = None

    def allows(self, target: object) -> bool:
        return isinstance(target, str) and target.startswith(self.prefixes) and ".." not in target

    def __str__(self) -> str:
        return ", ".join(p.rstrip(".") for p in self.prefixes)


# The components whose CHECKS visionlab.app.config.validate runs: visionlab's own classes.
COMPONENTS = AllowList(("visionlab.",))
# The nets a checkpoint's metadata may rebuild (visionlab.training.checkpoint.build_net).
MODELS = AllowList(("visionlab.models.",), base=nn.Module)
# What a config read from a run folder or checkpoint may instantiate (visionlab.app.safety):
# models, data, optimizers, schedulers, callbacks, loggers and transforms, none of which runs
# code named by its arguments.
RUN_FOLDER = AllowList(
    (
        "visionlab.",
        "torch.optim.",
        "lightning.pytorch.callbacks.",
        "lightning.pytorch.loggers.",
        "lightning.Trainer",
        "torchvision.transforms.",
        "torchvision.models.",
    )
)


class TargetError(ConfigError):
    """A `_target_` that cannot be built: `problem` is NOT_ALLOWED, NO_CLASS or NOT_A_CLASS;
    callers word it for their users."""

    def __init__(self, target: object, problem: str) -> None:
        super().__init__(f"_target_={target!r}: {problem}")
        self.target, self.problem = target, problem


def resolve_target(target: object, allowed: AllowList) -> type:
    """The class `target` names, if `allowed` lets it: refused before anything is imported
    from it, then it must import and be a class (a subclass of `allowed.base`)."""
    if not isinstance(target, str) or not allowed.allows(target):
        raise TargetError(target, NOT_ALLOWED)
    module_name, _, name = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        raise TargetError(target, NO_CLASS) from None
    if not isinstance(obj, type) or (allowed.base is not None and not issubclass(obj, allowed.base)):
        raise TargetError(target, NOT_A_CLASS)
    return obj
