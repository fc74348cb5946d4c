"""Resuming a run with `ckpt_path=`: checked completely before anything is written.

A checkpoint inside a run folder (RUN/checkpoints/x.ckpt) resumes that run in RUN with the
overrides it was started with. Only what does not change what the run *is* may differ on
the command line (RESUME_MAY_CHANGE: epochs and steps, limits and validation cadence, the
logger, callbacks, devices, paths). The replayed overrides come from a file, so the targets
they name are checked (visionlab.safety), and the checkpoint must fit the net the config
builds. A run whose schedule has a fixed length cannot be continued past it.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from visionlab.checkpoint import METADATA_KEY, net_state, read_checkpoint, weight_mismatch
from visionlab.config import ConfigError
from visionlab.safety import check_targets

# What a resume may change, as override keys (fnmatch patterns, after any +/~ prefix).
RESUME_MAY_CHANGE = (
    "ckpt_path", "trainer.max_epochs", "trainer.max_steps", "trainer.limit_*_batches",
    "trainer.val_check_interval", "trainer.check_val_every_n_epoch", "trainer.log_every_n_steps",
    "trainer.enable_progress_bar", "trainer", "trainer.accelerator", "trainer.devices", "trainer.num_nodes",
    "trainer.strategy", "logger", "logger.*", "callbacks", "callbacks.*", "test", "paths.*",
    "data.num_workers", "data.eval_batch_size", "hydra.*",
)
# Schedules whose length is fixed when the run starts: extending the run would leave them.
FIXED_LENGTH_SCHEDULES = ("OneCycleLR", "CosineAnnealingLR")


@dataclass
class Resume:
    """A checked resume: the checkpoint, its dict, and the run folder it continues (if any)."""

    ckpt: Path
    checkpoint: dict[str, Any]
    run_dir: Path | None


def _key(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def latest_last_checkpoint(log_dir: Path) -> Path | None:
    found = sorted(log_dir.glob("runs/*/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _checkpoint_file(value: str, argv: Sequence[str]) -> Path:
    if value == "last":
        log_dir = next((Path(a.partition("=")[2]) for a in argv if a.startswith("paths.log_dir=")),
                       Path(os.environ.get("VISIONLAB_ROOT", ".")) / "outputs")
        ckpt = latest_last_checkpoint(log_dir)
        if ckpt is None:
            raise ConfigError(f"ckpt_path=last: no run under {log_dir}/runs has checkpoints/last.ckpt")
        return ckpt
    ckpt = Path(value)
    if not ckpt.is_file():
        raise ConfigError(f"ckpt_path={value}: no such checkpoint file")
    return ckpt


def _replayed(saved: Path) -> list[str]:
    """The run's own overrides, read as data: strings only, targets checked, no hydra.*."""
    try:
        overrides = yaml.safe_load(saved.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{saved}: cannot read the run's overrides ({' '.join(str(err).split())[:120]})") from None
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"{saved}: not a list of overrides")
    kept = [o for o in overrides if not _key(o).startswith(("ckpt_path", "hydra"))]
    for override in kept:
        key, _, value = override.lstrip("+~").partition("=")
        if key.endswith("_target_"):
            check_targets({"_target_": value}, f"{saved}: {key.removesuffix('._target_')}")
        elif "_target_" in value:
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                parsed = None
            if not isinstance(parsed, (dict, list)):
                raise ConfigError(f"{saved}: override {override!r} names a _target_ in a form that cannot be checked")
            check_targets(parsed, f"{saved}: {key}")
    return kept


def prepare(argv: Sequence[str]) -> tuple[list[str], Resume | None]:
    """Expand `ckpt_path=PATH` (or `last`) into the arguments of the resumed run.

    Raises ConfigError, before anything is written, for a missing or unreadable
    checkpoint, a change that is not in RESUME_MAY_CHANGE, or a replayed target that is
    not allowed.
    """
    argv = list(argv)
    values = [a.partition("=")[2] for a in argv if a.startswith("ckpt_path=")]
    if not values or values[-1] in ("", "null") or "-m" in argv or "--multirun" in argv:
        return argv, None
    ckpt = _checkpoint_file(values[-1], argv)
    checkpoint = read_checkpoint(ckpt)
    rest = [a for a in argv if not a.startswith("ckpt_path=")]
    run_dir, saved = ckpt.parent.parent, ckpt.parent.parent / ".hydra" / "overrides.yaml"
    if ckpt.parent.name != "checkpoints" or not saved.is_file():
        return [*rest, f"ckpt_path={ckpt.resolve()}"], Resume(ckpt, checkpoint, None)
    changed = [a for a in rest if not any(fnmatch.fnmatchcase(_key(a), p) for p in RESUME_MAY_CHANGE)]
    if changed:
        raise ConfigError(
            f"ckpt_path={ckpt}: resuming run {run_dir} cannot change {', '.join(changed)}: it would no longer be "
            f"the same run; a resume may change only {', '.join(RESUME_MAY_CHANGE)}. To train something else, "
            "start a new run"
        )
    return ([*_replayed(saved), *rest, f"ckpt_path={ckpt.resolve()}", f"hydra.run.dir={run_dir}"],
            Resume(ckpt, checkpoint, run_dir))


def check_fits(cfg: DictConfig, resume: Resume) -> None:
    """The composed config must build the net the checkpoint holds, and keep its schedule."""
    meta = resume.checkpoint.get(METADATA_KEY, {})
    shape, classes = meta.get("input_shape"), meta.get("classes")
    if shape and classes:
        net = instantiate(cfg.model, input_shape=list(shape), num_classes=len(classes))
        mismatch = weight_mismatch(net, net_state(resume.checkpoint))
        if mismatch:
            raise ConfigError(f"ckpt_path={resume.ckpt}: does not fit model {cfg.model._target_} "
                              f"(another architecture?): {mismatch}")
    if resume.run_dir is None:
        return
    target = str(OmegaConf.select(cfg, "scheduler.factory._target_", default="") or "")
    saved_cfg = resume.run_dir / ".hydra" / "config.yaml"
    if not target.endswith(FIXED_LENGTH_SCHEDULES) or not saved_cfg.is_file():
        return
    started = OmegaConf.load(saved_cfg)
    for key in ("trainer.max_epochs", "trainer.max_steps", "trainer.limit_train_batches"):
        before, now = OmegaConf.select(started, key, default=None), OmegaConf.select(cfg, key, default=None)
        if before != now:
            raise ConfigError(
                f"{key}={now} (the run started with {before}): this run's scheduler {target.rpartition('.')[2]} "
                f"has a fixed length set when it started, so it cannot be continued past it; resume with "
                f"{key}={before}, or start a new run (scheduler=step, plateau or none can be continued)"
            )
