"""Config checks, all in one place, run before any data is read or model built.

Each failure is one line naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

from visionlab.data.image_folder import COLORS
from visionlab.utils.errors import ConfigError
from visionlab.models.activations import ACTIVATIONS
from visionlab.models.init import INITS
from visionlab.training.task import LOGGED_METRICS, LOSSES

# The wheel ships conf/ inside the package (setup.py); a checkout or editable install uses the repo's.
_PACKAGED_CONF = Path(__file__).resolve().parents[1] / "conf"
CONF_DIR = _PACKAGED_CONF if _PACKAGED_CONF.is_dir() else Path(__file__).resolve().parents[3] / "conf"

# `${visionlab.mul:${optimizer.lr},2}`: configs may scale one value by another.
if not OmegaConf.has_resolver("visionlab.mul"):
    OmegaConf.register_new_resolver("visionlab.mul", lambda a, b: float(a) * float(b))


Rule = tuple[str, Callable[[Any], bool], str]

RULES: tuple[Rule, ...] = (
    ("seed", lambda v: _int(v) and v >= 0, "an integer >= 0"),
    ("optimizer.lr", lambda v: _num(v) and v > 0, "a number > 0"),
    ("optimizer.weight_decay", lambda v: _num(v) and v >= 0, "a number >= 0"),
    ("optimizer.momentum", lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("model.dropout", lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("model.activation", lambda v: v in ACTIVATIONS, f"one of {', '.join(ACTIVATIONS)}"),
    ("model.init", lambda v: v in INITS, f"one of {', '.join(INITS)}"),
    ("model.hidden", lambda v: _sizes(v, allow_empty=False), "a non-empty list of positive integers"),
    ("model.channels", lambda v: _sizes(v, allow_empty=False), "a non-empty list of positive integers"),
    ("model.dense", lambda v: _sizes(v, allow_empty=True), "a list of positive integers"),
    ("model.kernel_size", lambda v: _int(v) and v >= 1, "an integer >= 1"),
    ("data.batch_size", lambda v: _int(v) and v >= 1, "an integer >= 1"),
    ("data.eval_batch_size", lambda v: _int(v) and v >= 1, "an integer >= 1"),
    ("data.val_size", lambda v: (_int(v) and v >= 0) or (isinstance(v, float) and 0 <= v < 1),
     "a whole count >= 0 (5000) or a fraction below 1 (0.1); 1.0 could mean either"),
    ("data.num_workers", lambda v: _int(v) and v >= 0, "an integer >= 0"),
    ("task.loss", lambda v: v in LOSSES, f"one of {', '.join(LOSSES)}"),
    ("task.label_smoothing", lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("task.l1", lambda v: _num(v) and v >= 0, "a number >= 0"),
    ("task.l2", lambda v: _num(v) and v >= 0, "a number >= 0"),
    ("scheduler.interval", lambda v: v in ("step", "epoch"), "step or epoch"),
    ("model.name", lambda v: isinstance(v, str) and v != "", "a model name (the builder lists close matches)"),
    ("model.backbone_lr_scale", lambda v: _num(v) and v > 0, "a number > 0"),
    ("model.image_size", lambda v: _int(v) and v >= 1, "an integer >= 1, or null"),
    ("finetune.unfreeze_at_epoch", lambda v: _int(v) and v >= 0, "an integer >= 0, or null"),
    ("data.image_size", lambda v: _int(v) and v >= 1, "an integer >= 1"),
    ("data.color", lambda v: v in COLORS, f"one of {', '.join(COLORS)}"),
    ("data.augment.crop_padding", lambda v: _int(v) and v >= 0, "an integer >= 0"),
    ("data.augment.mixup", lambda v: _num(v) and v >= 0, "a Beta alpha >= 0 (0: off)"),
    ("data.augment.cutmix", lambda v: _num(v) and v >= 0, "a Beta alpha >= 0 (0: off)"),
    ("data.augment.randaugment_ops", lambda v: _int(v) and v >= 1, "an integer >= 1"),
    ("data.augment.randaugment_magnitude", lambda v: _int(v) and 0 <= v <= 30, "an integer in 0..30"),
    ("tune.min_lr", lambda v: _num(v) and v > 0, "a number > 0"),
    ("tune.max_lr", lambda v: _num(v) and v > 0, "a number > 0"),
    ("tune.num_training", lambda v: _int(v) and v >= 3, "an integer >= 3"),
    ("explain", lambda v: v in ("gradcam", "saliency"), "gradcam or saliency, or null"),
    ("explain_layer", lambda v: isinstance(v, str) and v != "", "a layer name such as features.4, or null"),
    ("trainer.max_epochs", lambda v: _int(v) and (v >= 1 or v == -1), "an integer >= 1, or -1"),
)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _sizes(v: Any, allow_empty: bool) -> bool:
    return isinstance(v, Sequence) and (allow_empty or len(v) > 0) and all(_int(s) and s > 0 for s in v)


def _monitored(cfg: DictConfig) -> list[tuple[str, str]]:
    keys = [("scheduler.monitor", OmegaConf.select(cfg, "scheduler.monitor", default=None))]
    for name, callback in (OmegaConf.select(cfg, "callbacks", default=None) or {}).items():
        if isinstance(callback, DictConfig):
            keys.append((f"callbacks.{name}.monitor", callback.get("monitor")))
    return [(key, value) for key, value in keys if value is not None]


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first value that breaks a rule."""
    for key, value in _monitored(cfg):
        if value not in LOGGED_METRICS:
            raise ConfigError(f"{key}={value!r} is never logged; expected one of {', '.join(LOGGED_METRICS)}")
    mixing = [k for k in ("mixup", "cutmix") if OmegaConf.select(cfg, f"data.augment.{k}", default=0)]
    if mixing and OmegaConf.select(cfg, "task.loss", default=None) == "hinge":
        raise ConfigError(f"task.loss=hinge cannot learn from the soft labels of data.augment.{mixing[0]}; "
                          "use task.loss=cross_entropy or switch mixing off")
    for key, ok, allowed in RULES:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        if isinstance(value, DictConfig) or OmegaConf.is_list(value):
            value = OmegaConf.to_container(value)
        if not ok(value):
            raise ConfigError(f"{key}={value!r} is not allowed; expected {allowed}")


def compose_config(overrides: Sequence[str] = (), output_dir: str | Path | None = None,
                   config_name: str = "train") -> DictConfig:
    """The config an entry point would compose for `overrides`, outside a Hydra run (tests,
    the benchmark), with the hydra node included and writing under `output_dir` if given."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    if output_dir is not None:
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
