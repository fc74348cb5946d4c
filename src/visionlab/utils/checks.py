"""Config checks that each component declares beside its own code.

A class that a config names by `_target_` lists the arguments it accepts as `CHECKS`, keys
relative to its config node (`MLP.CHECKS` holds `dropout`, reported as `model.dropout`).
visionlab.app.config finds them through the `_target_`s of the composed config and runs
them before any data is read, so adding a model is its file and its YAML, no central table.
Each failure is one line naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from visionlab.utils.errors import ConfigError

Lookup = Callable[[str], Any]  # a dotted key of the composed config -> its plain value, or None


@dataclass(frozen=True)
class Check:
    """`key` (dotted, relative to the component's node) must satisfy `ok`; `allowed` says
    what would. A missing or null value is not checked (it means the component's default)
    unless `required`: a key that has no default behind it, like a server's port."""

    key: str
    ok: Callable[[Any], bool]
    allowed: str
    required: bool = False


def run_checks(checks: Iterable[Check], lookup: Lookup, prefix: str = "") -> None:
    """Raise ConfigError for the first value under `prefix` that fails its check."""
    for check in checks:
        key = prefix + check.key
        value = lookup(key)
        if (value is not None or check.required) and not check.ok(value):
            shown = "null" if value is None else repr(value)  # as the user wrote it in YAML
            raise ConfigError(f"{key}={shown} is not allowed; expected {check.allowed}")


def under(prefix: str, checks: Iterable[Check]) -> tuple[Check, ...]:
    """`checks` of a nested node (`augment.` for Augment's, inside a DataModule's)."""
    return tuple(replace(c, key=prefix + c.key) for c in checks)


def required(*checks: Check) -> tuple[Check, ...]:
    """`checks` whose keys must be set: null fails them too."""
    return tuple(replace(c, required=True) for c in checks)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_finite(v: Any) -> bool:
    """A number that is neither inf nor nan: no option of visionlab means anything at infinity."""
    return is_number(v) and math.isfinite(v)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def positive(key: str) -> Check:
    return Check(key, lambda v: is_finite(v) and v > 0, "a finite number > 0")


def non_negative(key: str, allowed: str = "a finite number >= 0") -> Check:
    return Check(key, lambda v: is_finite(v) and v >= 0, allowed)


def fraction(key: str) -> Check:
    return Check(key, lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)")


def between(key: str, low: float, high: float, allowed: str | None = None) -> Check:
    """A number in [low, high], both ends included."""
    return Check(key, lambda v: is_finite(v) and low <= v <= high, allowed or f"a number in [{low:g}, {high:g}]")


def integer(key: str, minimum: int, allowed: str | None = None) -> Check:
    return Check(key, lambda v: is_int(v) and v >= minimum, allowed or f"an integer >= {minimum}")


def one_of(key: str, options: Collection[str], allowed: str | None = None) -> Check:
    return Check(key, lambda v: v in options, allowed or f"one of {', '.join(options)}")


def sizes(key: str, allow_empty: bool) -> Check:
    def ok(v: Any) -> bool:
        return isinstance(v, Sequence) and (allow_empty or len(v) > 0) and all(is_int(s) and s > 0 for s in v)

    return Check(key, ok, "a list of positive integers" if allow_empty else "a non-empty list of positive integers")
