"""Composing the config outside a Hydra run, and checking it before any data is read or
model built: each component's own checks (visionlab.utils.checks), found through the
config's `_target_`s, and the entry point's checks of its top-level keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from visionlab.utils.checks import Check, Lookup, run_checks
from visionlab.utils.errors import ConfigError
from visionlab.utils.targets import COMPONENTS, TargetError, resolve_target

# The wheel ships conf/ inside the package (setup.py); a checkout or editable install uses the repo's.
_PACKAGED_CONF = Path(__file__).resolve().parents[1] / "conf"
CONF_DIR = _PACKAGED_CONF if _PACKAGED_CONF.is_dir() else Path(__file__).resolve().parents[3] / "conf"

# `${visionlab.mul:${optimizer.lr},2}`: configs may scale one value by another.
if not OmegaConf.has_resolver("visionlab.mul"):
    OmegaConf.register_new_resolver("visionlab.mul", lambda a, b: float(a) * float(b))


def override(key: str, value: str | Path) -> str:
    """`key='value'` in Hydra's override grammar, the value taken literally: quoted, with
    quotes, the backslashes before them and `${` escaped. A path pasted in unquoted would be
    parsed (`a,b.ckpt` as a list, `a=b.ckpt` as a syntax error)."""
    text = re.sub(r"\\+(?='|$)", lambda m: m.group(0) * 2, str(value))
    return f"{key}='" + text.replace("'", "\\'").replace("${", "\\${") + "'"


def validate(cfg: DictConfig, checks: Sequence[Check] = ()) -> None:
    """Raise ConfigError for the first value that fails a check: `checks` (an entry point's
    own keys), then those of each component a `visionlab.` `_target_` names (its `CHECKS`,
    relative to its node, and `check_config`, for what it needs of other groups)."""
    lookup = _lookup(cfg)
    run_checks(checks, lookup)
    for path, component in _components(OmegaConf.to_container(cfg, resolve=False)):
        if callable(check_config := getattr(component, "check_config", None)):
            check_config(lookup)
        run_checks(getattr(component, "CHECKS", ()), lookup, f"{path}.")


def _lookup(cfg: DictConfig) -> Lookup:
    """A dotted key -> its resolved value: lists as lists, mappings as (lazy) mappings."""

    def lookup(key: str) -> Any:
        value = OmegaConf.select(cfg, key, default=None)
        return OmegaConf.to_container(value, resolve=True) if isinstance(value, ListConfig) else value

    return lookup


def _components(node: Any, path: str = "") -> Iterator[tuple[str, type]]:
    """(config path, class) of every node of `node` (a plain container) whose `_target_`
    names a visionlab class. Only visionlab modules are imported: a config read from a run
    folder may name anything (visionlab.app.safety checks those before they are built)."""
    if isinstance(node, Mapping):
        target = node.get("_target_")
        if path and target is not None:
            try:
                component: type | None = resolve_target(target, COMPONENTS)
            except TargetError:
                component = None  # not visionlab's, or instantiate reports it in its own words
            if component is not None:
                yield path, component
        children: Iterable[tuple[Any, Any]] = node.items()
    elif isinstance(node, list):
        children = enumerate(node)
    else:
        return
    for key, child in children:
        if key != "hydra" or path:
            yield from _components(child, f"{path}.{key}" if path else str(key))


def compose_config(
    overrides: Sequence[str] = (), output_dir: str | Path | None = None, config_name: str = "train"
) -> DictConfig:
    """The config an entry point would compose for `overrides`, outside a Hydra run (tests,
    the benchmark), with the hydra node included and writing under `output_dir` if given."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    return cfg if output_dir is None else at_folder(cfg, output_dir)


def at_folder(cfg: DictConfig, output_dir: str | Path) -> DictConfig:
    """`cfg` writing under `output_dir` (paths.output_dir and the Trainer's root), changed in place."""
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        if "trainer" in cfg:
            cfg.trainer.default_root_dir = str(output_dir)
    return cfg


def check_group_overrides(overrides: Sequence[str], conf_dir: Path = CONF_DIR) -> None:
    """Fail on `group=option` overrides naming an option that has no YAML file.

    Hydra reports this too, but over several lines; this check names the allowed options
    in one. Sweeps (`model=mlp,cnn`) are checked option by option.
    """
    for arg in overrides:
        key, sep, value = arg.lstrip("+~").partition("=")
        group = conf_dir / key.replace(".", "/")
        if not sep or not group.is_dir() or key.startswith("hydra") or "(" in value:
            continue
        options = sorted(p.stem for p in group.glob("*.yaml"))
        for option in value.split(","):
            if option not in options and option != "null":
                raise ConfigError(f"{key}={option} is not an option; allowed: {', '.join(options)}")
