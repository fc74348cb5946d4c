"""Run folders are data: what a config read from a file may instantiate.

A run folder (its `.hydra/config.yaml`, `overrides.yaml`, its checkpoints) may come from
someone else, as a zip or on a shared disk. Hydra's `instantiate` calls whatever a
`_target_` names, so a target from such a file is allowed only when it is a class of a
short list of packages (visionlab.utils.targets.RUN_FOLDER), checked before anything is
imported from it. The check is made on what will be built: values resolved, with resolvers
limited to pure ones (no oc.create, oc.decode or oc.env from a file) and no escaped
interpolation left to come alive later; the object is then built from those checked plain
values, never from the file's text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from visionlab.utils import targets
from visionlab.utils.errors import ConfigError


def resolve_target(target: str, where: str, base: type | None = None) -> type:
    """The class `target` names, if visionlab.utils.targets.RUN_FOLDER allows it (and a
    subclass of `base`)."""
    try:
        return targets.resolve_target(target, replace(targets.RUN_FOLDER, base=base))
    except targets.TargetError as err:
        if err.problem == targets.NO_CLASS:
            raise ConfigError(f"{where}={target!r} names no class") from None
        refused = f"{where}={target!r} is not allowed from a run folder or checkpoint"
        if err.problem == targets.NOT_ALLOWED:
            raise ConfigError(f"{refused}; allowed: classes of {targets.RUN_FOLDER}") from None
        kind = f"a subclass of {base.__name__}" if base is not None else "a class"
        raise ConfigError(f"{refused}; expected {kind}") from None


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


# --- values read from a run folder ------------------------------------------------------
# Resolvers a value from a run folder may call: pure functions of the config. Those that
# create nodes (oc.create, oc.decode: a string becomes a `_target_`), read the environment
# (oc.env) or call anything else are refused, and so is an escaped `\${`, which resolves
# into a live interpolation the next time OmegaConf reads the value (instantiate does).
SAFE_RESOLVERS = frozenset({"visionlab.mul", "oc.select"})


def _resolvers(text: str) -> list[str]:
    """The resolver names `text` calls, parsed with OmegaConf's own grammar (what it will
    run); a name built by an interpolation is returned as written, and so refused."""
    from omegaconf import grammar_parser

    try:
        tree = grammar_parser.parse(text)
    except Exception:  # noqa: BLE001 - antlr and omegaconf raise several types for bad syntax
        return [text]  # not a value OmegaConf can read: treated as unsafe
    names: list[str] = []

    def walk(node: Any) -> None:
        if type(node).__name__ == "ResolverNameContext":
            names.append(node.getText())
        for i in range(node.getChildCount() if hasattr(node, "getChildCount") else 0):
            walk(node.getChild(i))

    walk(tree)
    return names


def check_values(node: Any, where: str) -> None:
    """Refuse, in `node` (read from a file), any interpolation that calls a resolver outside
    SAFE_RESOLVERS and any escaped interpolation; references to other keys are fine."""
    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=False)
    if isinstance(node, Mapping):
        for key, value in node.items():
            check_values(key, where)
            check_values(value, f"{where}.{key}")
    elif isinstance(node, Sequence) and not isinstance(node, str):
        for i, value in enumerate(node):
            check_values(value, f"{where}[{i}]")
    elif isinstance(node, str) and "${" in node:
        unsafe = [name for name in _resolvers(node) if name not in SAFE_RESOLVERS]
        if "\\${" in node or unsafe:
            what = f"calls {unsafe[0]}" if unsafe else "hides an interpolation behind an escape"
            raise ConfigError(
                f"{where}={node!r} {what}, which is not allowed from a run folder or checkpoint; "
                f"allowed: references to other keys and {', '.join(sorted(SAFE_RESOLVERS))}"
            )


def _no_interpolation(node: Any, where: str) -> None:
    if isinstance(node, Mapping):
        for key, value in node.items():
            _no_interpolation(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _no_interpolation(value, f"{where}[{i}]")
    elif isinstance(node, str) and "${" in node:
        raise ConfigError(
            f"{where}={node!r}: a resolved value that is still an interpolation is not allowed "
            "from a run folder or checkpoint"
        )


def resolved_data(node: DictConfig | Mapping[str, Any], where: str, base: type | None = None) -> dict[str, Any]:
    """What `instantiate(node)` would see, as plain data: every interpolation resolved, no
    interpolation left to resolve again, every `_target_` allowed. Instantiate this, not
    `node`: what is built is exactly what was checked."""
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    if not isinstance(plain, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(plain).__name__}")
    _no_interpolation(plain, where)
    check_targets(plain, where, base)
    return {str(k): v for k, v in plain.items()}


def check_composed(cfg: DictConfig, run_dir: str) -> None:
    """A resumed run's composed config checked as its build will see it: resolved (with
    the run folder as output_dir), no interpolation left, every `_target_` allowed,
    Hydra's own callbacks included. Its replayed overrides were checked line by line
    already; this is the same question asked of the whole."""
    plain = {str(k): v for k, v in cfg.items() if k != "hydra"}
    copy = OmegaConf.create(plain)
    if "paths" in copy:
        copy.paths.output_dir = run_dir
    resolved_data(copy, "config")
    check_targets(OmegaConf.select(cfg, "hydra.callbacks", default=None) or {}, "hydra.callbacks")
