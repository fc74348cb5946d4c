"""Optional parts of visionlab are pip extras (pyproject.toml): `make train` installs what
training needs, `make test` everything. A command that needs an extra that is not installed
stops in one line naming the pip install to run: before it starts when a config value asks
for it (`needs`, in CHECKS), else where the package is imported (`need`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import import_module
from importlib.util import find_spec
from types import ModuleType
from typing import Any

from visionlab.utils.checks import Check
from visionlab.utils.errors import ConfigError


class MissingExtra(ConfigError):
    """A package of one of visionlab's extras is not installed: the environment, not a bug."""

    def __init__(self, feature: str, package: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs {package}, which is not installed: pip install -e '.[{extra}]' "
            f"(from PyPI: pip install 'visionlab[{extra}]')"
        )


def need(module: str, extra: str, feature: str) -> ModuleType:
    """`module`, imported; MissingExtra when its package is not installed (a package that is
    installed but fails to import raises as it does)."""
    try:
        return import_module(module)
    except ModuleNotFoundError as err:
        package = module.split(".")[0]
        if err.name is None or err.name.split(".")[0] != package:
            raise
        raise MissingExtra(feature, package, extra) from None


def needs(key: str, extra: str, packages: Sequence[str], when: Callable[[Any], bool] = bool, node: str = "") -> Check:
    """A check for CHECKS: a value of `key` for which `when` holds needs `packages`, the
    extra `extra`; one that is missing stops the command before it starts (MissingExtra).
    `node`: where a component's config sits (`data.`), for the message."""

    def ok(value: Any) -> bool:
        if when(value):
            for package in packages:
                if find_spec(package) is None:
                    raise MissingExtra(f"{node}{key}={value}", package, extra)
        return True

    return Check(key, ok, f"the {extra} extra installed")
