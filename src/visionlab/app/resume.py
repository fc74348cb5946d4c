"""Resuming a run with `ckpt_path=`: checked completely before anything is written.

A checkpoint inside a run folder (RUN/checkpoints/x.ckpt) resumes that run in RUN with the
overrides it was started with. Only what does not change what the run *is* may differ on
the command line (RESUME_MAY_CHANGE: epochs and steps, limits and validation cadence, the
logger, callbacks, devices, paths). The replayed overrides come from a file, so the targets
they name are checked (visionlab.app.safety), and the checkpoint must fit the net the config
builds. A run whose schedule has a fixed length cannot be continued past it.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from visionlab.app.config import ConfigError, override
from visionlab.app.safety import check_targets, check_values
from visionlab.training.checkpoint import (
    METADATA_KEY,
    net_state,
    read_checkpoint,
    training_progress,
    weight_mismatch,
)

log = logging.getLogger("visionlab")

# What a resume may change, as override keys (fnmatch patterns, after any +/~ prefix).
RESUME_MAY_CHANGE = (
    "ckpt_path",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.limit_*_batches",
    "trainer.val_check_interval",
    "trainer.check_val_every_n_epoch",
    "trainer.log_every_n_steps",
    "trainer.enable_progress_bar",
    "trainer",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "logger",
    "logger.*",
    "callbacks",
    "callbacks.*",
    "test",
    "paths.*",
    "data.num_workers",
    "data.eval_batch_size",
    "hydra.*",
)
# Schedules whose length is fixed when the run starts: extending the run would leave them.
FIXED_LENGTH_SCHEDULES = ("OneCycleLR", "CosineAnnealingLR")


MAY_CHANGE_IN_WORDS = (
    "epochs and steps, batch limits, validation cadence, the logger, callbacks, devices, "
    "paths, data.num_workers and data.eval_batch_size"
)


@dataclass
class Resume:
    """A checked resume: the checkpoint, its dict, the run folder it continues (if any),
    the run's own overrides and the new ones that may change what the run is."""

    ckpt: Path
    checkpoint: dict[str, Any]
    run_dir: Path | None
    replayed: list[str] = field(default_factory=list)
    suspect: list[str] = field(default_factory=list)


def _key(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def latest_last_checkpoint(log_dir: Path) -> Path | None:
    """last.ckpt of the newest run under `log_dir`/runs: the latest run folder by its name
    (DATE/TIME, when the run started), not the most recently written file (resuming an older
    run rewrites its last.ckpt). Runs without a last.ckpt (stopped before one) are passed over."""
    found = sorted(log_dir.glob("runs/*/*/checkpoints/last.ckpt"), key=lambda p: p.parts[-4:-2])
    return found[-1] if found else None


def _checkpoint_file(value: str, argv: Sequence[str]) -> Path:
    if value == "last":
        log_dir = next(
            (Path(a.partition("=")[2]) for a in argv if a.startswith("paths.log_dir=")),
            Path(os.environ.get("VISIONLAB_ROOT", ".")) / "outputs",
        )
        ckpt = latest_last_checkpoint(log_dir)
        if ckpt is None:
            raise ConfigError(f"ckpt_path=last: no run under {log_dir}/runs has checkpoints/last.ckpt")
        log.info("ckpt_path=last: %s (the newest run's last checkpoint)", ckpt)
        return ckpt
    ckpt = Path(value)
    if not ckpt.is_file():
        raise ConfigError(f"ckpt_path={value}: no such checkpoint file")
    return ckpt


def _without_removed(saved: Path, rest: list[str]) -> tuple[list[str], list[str]]:
    """The run's checked overrides less those under a key the new command line removes
    (`~callbacks.stall`); a `~key` whose key only the replayed overrides had added is then
    spent, and dropped too."""
    removed = [a[1:].partition("=")[0] for a in rest if a.startswith("~")]

    def under(override: str, key: str) -> bool:
        return _key(override) == key or _key(override).startswith(key + ".")

    raw = _read_overrides(saved)
    dropped = [o for o in raw if any(under(o, k) for k in removed)]
    replayed = _replayed(saved, [o for o in raw if o not in dropped])
    spent = {
        k
        for k in removed
        if any(under(o, k) for o in dropped) and all(o.startswith("+") for o in dropped if under(o, k))
    }
    return replayed, [a for a in rest if not (a.startswith("~") and a[1:].partition("=")[0] in spent)]


def _read_overrides(saved: Path) -> list[str]:
    try:
        overrides = yaml.safe_load(saved.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{saved}: cannot read the run's overrides ({' '.join(str(err).split())[:120]})") from None
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"{saved}: not a list of overrides")
    return overrides


def _replayed(saved: Path, overrides: list[str]) -> list[str]:
    """The run's own overrides, read as data and parsed as Hydra will parse them: one plain
    override per line (no Hydra flag, sweep or package), nothing under hydra, values that
    call no resolver but pure ones, every `_target_` allowed. `ckpt_path` is dropped."""
    parser = OverridesParser.create()
    kept = []
    for line in overrides:
        try:
            override = parser.parse_override(line)
        except HydraException:
            raise ConfigError(
                f"{saved}: {line!r} is not a config override (Hydra flags are never replayed); "
                "edit the file or start a new run"
            ) from None
        key = override.key_or_group
        if key == "ckpt_path":
            continue
        if (
            key.startswith("hydra")
            or (override.package or "").startswith(("hydra", "_global_"))
            or override.is_sweep_override()
        ):
            raise ConfigError(
                f"{saved}: {line!r} is not replayed by a resume (only plain config overrides are); "
                "edit the file or start a new run"
            )
        node = key.removesuffix("._target_")
        value = override.value()
        try:
            check_values(value, f"{saved}: {key}")
            check_targets({"_target_": value} if key.endswith("_target_") else value, f"{saved}: {node}")
        except ConfigError as err:
            raise ConfigError(f"{err}; resume with ~{node} to leave it out") from None
        kept.append(line)
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
    if training_progress(checkpoint) is None:
        raise ConfigError(
            f"ckpt_path={ckpt}: holds weights only (no optimizer or loop state), so it cannot resume "
            "a run; resume from the run's checkpoints/last.ckpt, or evaluate this file with scripts/evaluate.py"
        )
    rest = [a for a in argv if not a.startswith("ckpt_path=")]
    run_dir, saved = ckpt.parent.parent, ckpt.parent.parent / ".hydra" / "overrides.yaml"
    if ckpt.parent.name != "checkpoints" or not saved.is_file():
        return [*rest, override("ckpt_path", ckpt.resolve())], Resume(ckpt, checkpoint, None)
    _check_no_links(run_dir)
    replayed, rest = _without_removed(saved, rest)
    suspect = [a for a in rest if not _may_change(a) and a not in replayed]
    # hydra.output_subdir=null: the run's .hydra/ keeps the config it started with (the
    # resume is recorded in run_info.json)
    return (
        [
            *replayed,
            *rest,
            override("ckpt_path", ckpt.resolve()),
            override("hydra.run.dir", run_dir),
            "hydra.output_subdir=null",
        ],
        Resume(ckpt, checkpoint, run_dir, replayed, suspect),
    )


def _check_no_links(run_dir: Path) -> None:
    """A resume writes into the run folder: a link inside it would carry those writes (CSV
    rows, checkpoints, metrics.json) to a file outside, so a folder holding one is refused."""
    for folder, dirs, files in os.walk(run_dir):
        for name in (*dirs, *files):
            path = Path(folder) / name
            if path.is_symlink():
                raise ConfigError(
                    f"{path} is a symbolic link; a resume writes into run {run_dir}, which must hold "
                    "plain files and folders only: replace the link by a copy, or start a new run"
                )


def _may_change(override: str) -> bool:
    return any(fnmatch.fnmatchcase(_key(override), p) for p in RESUME_MAY_CHANGE)


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def check_unchanged(argv: Sequence[str], resume: Resume, config_name: str = "train") -> None:
    """Refuse new overrides that change the run's config outside RESUME_MAY_CHANGE
    (`model=cnn` on a CNN run changes nothing and passes; `model=mlp` does not)."""
    if not resume.suspect:
        return
    from visionlab.app.config import compose_config

    allowed = [a for a in argv if a not in resume.suspect]
    before = _flat(OmegaConf.to_container(compose_config(allowed, config_name=config_name)))
    try:
        after = _flat(OmegaConf.to_container(compose_config(argv, config_name=config_name)))
    except Exception:  # noqa: BLE001 - the run's own overrides do not fit the change (model=mlp on model.channels)
        after = {"(the run's own overrides no longer compose)": True}
    differs = sorted(
        k
        for k in before.keys() | after.keys()
        if before.get(k) != after.get(k)
        and not k.startswith("hydra.")
        and not any(fnmatch.fnmatchcase(k, p) or fnmatch.fnmatchcase(k, p + ".*") for p in RESUME_MAY_CHANGE)
    )
    if differs:
        raise ConfigError(
            f"ckpt_path={resume.ckpt}: {' '.join(resume.suspect)} would change what run {resume.run_dir} is "
            f"({', '.join(differs[:3])}{', ...' if len(differs) > 3 else ''}); a resume may change only "
            f"{MAY_CHANGE_IN_WORDS}. To train something else, start a new run"
        )


def _check_something_left(cfg: DictConfig, resume: Resume) -> None:
    """A finished run resumed with the same length would only test again (and rewrite
    metrics.json without the epochs it trained): refused, saying how to train longer."""
    epochs, steps = training_progress(resume.checkpoint) or (0, 0)
    max_epochs = OmegaConf.select(cfg, "trainer.max_epochs", default=None)
    max_steps = OmegaConf.select(cfg, "trainer.max_steps", default=-1)
    done = []
    if isinstance(max_epochs, int) and max_epochs >= 0 and epochs >= max_epochs:
        done.append(f"{epochs} of trainer.max_epochs={max_epochs} epochs")
    if isinstance(max_steps, int) and max_steps >= 0 and steps >= max_steps:
        done.append(f"{steps} of trainer.max_steps={max_steps} steps")
    if done:
        raise ConfigError(
            f"ckpt_path={resume.ckpt}: the run already trained {' and '.join(done)}, so a resume has "
            f"nothing left to train; to train longer, resume with a larger trainer.max_epochs "
            f"(or max_steps); to test it again, run scripts/evaluate.py ckpt_path={resume.ckpt}"
        )


def check_fits(cfg: DictConfig, resume: Resume) -> None:
    """The composed config must leave something to train, build the net the checkpoint
    holds and keep its schedule."""
    _check_something_left(cfg, resume)
    meta = resume.checkpoint.get(METADATA_KEY, {})
    shape, classes = meta.get("input_shape"), meta.get("classes")
    if shape and classes:
        net = instantiate(cfg.model, input_shape=list(shape), num_classes=len(classes))
        mismatch = weight_mismatch(net, net_state(resume.checkpoint))
        if mismatch:
            raise ConfigError(
                f"ckpt_path={resume.ckpt}: does not fit model {cfg.model._target_} (another architecture?): {mismatch}"
            )
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
