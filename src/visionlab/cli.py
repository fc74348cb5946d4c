"""What every Hydra entry point shares: config location, early override checks, and bad
input reported as one line instead of a traceback."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from visionlab.config import CONF_DIR, ConfigError, check_group_overrides
from visionlab.data.sources import DataSourceError
from visionlab.io import atomic_write

log = logging.getLogger("visionlab")

# Errors that mean "the input is wrong", not "the code is wrong": reported in one line.
USER_ERRORS = (ConfigError, ValueError, DataSourceError, FileNotFoundError, FloatingPointError)


def one_line(err: BaseException) -> str:
    """The innermost message of `err` (Hydra wraps instantiation errors), on one line."""
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return " ".join(str(err).split()) or type(err).__name__


def _in_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def _latest_last_checkpoint(log_dir: Path) -> Path | None:
    found = sorted(log_dir.glob("runs/*/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def resume_overrides(argv: Sequence[str]) -> list[str]:
    """Expand `ckpt_path=PATH` (or `last`: the newest run's last.ckpt) into a resume.

    A checkpoint inside a run folder (RUN/checkpoints/x.ckpt) resumes that run in RUN, with
    the overrides it was started with, so the model and data match what was saved.
    """
    argv = list(argv)
    values = [a.partition("=")[2] for a in argv if a.startswith("ckpt_path=")]
    if not values or values[-1] in ("", "null") or "-m" in argv or "--multirun" in argv:
        return argv
    value = values[-1]
    if value == "last":
        log_dir = next((Path(a.partition("=")[2]) for a in argv if a.startswith("paths.log_dir=")),
                       Path(os.environ.get("VISIONLAB_ROOT", ".")) / "outputs")
        ckpt = _latest_last_checkpoint(log_dir)
        if ckpt is None:
            raise ConfigError(f"ckpt_path=last: no run under {log_dir}/runs has checkpoints/last.ckpt")
    else:
        ckpt = Path(value)
        if not ckpt.is_file():
            raise ConfigError(f"ckpt_path={value}: no such checkpoint file")
    rest = [a for a in argv if not a.startswith("ckpt_path=")]
    run_dir, saved = ckpt.parent.parent, ckpt.parent.parent / ".hydra" / "overrides.yaml"
    if ckpt.parent.name != "checkpoints" or not saved.is_file():
        return [*rest, f"ckpt_path={ckpt.resolve()}"]
    original = [o for o in yaml.safe_load(saved.read_text()) or []
                if not o.startswith(("ckpt_path=", "hydra.run.dir="))]
    return [*original, *rest, f"ckpt_path={ckpt.resolve()}", f"hydra.run.dir={run_dir}"]


ERROR_FILE = "error.txt"  # in a failed run's folder: what went wrong, for the report


def _error_file() -> Path | None:
    try:
        return Path(HydraConfig.get().runtime.output_dir) / ERROR_FILE
    except ValueError:
        return None


def _record_failure(message: str) -> None:
    """Write `message` to the run folder's error.txt, so a report lists the run as failed."""
    if (path := _error_file()) is not None:
        atomic_write(path, message + "\n")


def _sweeper_reads_failures() -> bool:
    """Whether the sweeper must see a failed job as an exception rather than a NaN result.

    Hydra's basic sweeper ignores results, so a NaN lets the sweep (and its report) finish.
    Other sweepers score results: Optuna's marks a raising trial FAILED and counts it
    against `max_failure_rate`, but crashes on NaN (optuna 2.10 refuses NaN values).
    """
    target = str(OmegaConf.select(HydraConfig.get(), "sweeper._target_", default=""))
    return not target.endswith("BasicSweeper")


def hydra_entry(config_name: str, fn: Callable[[DictConfig], Any]) -> Callable[[], None]:
    """A `main()` that runs `fn(cfg)` under Hydra with the checks above.

    A failing run writes its message to error.txt in its folder. Bad input ends a single
    run with one line on stderr (exit 2). In a multirun a failing job is logged (bad input
    in one line, a crash with its traceback) and the other jobs go on: the basic sweeper
    gets NaN, other sweepers the exception. VISIONLAB_DEBUG=1 gives full tracebacks.
    """

    def task_function(cfg: DictConfig) -> Any:
        try:
            result = fn(cfg)
            if (stale := _error_file()) is not None:
                stale.unlink(missing_ok=True)  # a resumed run that now succeeded
            return result
        except Exception as err:
            user_error = isinstance(err, USER_ERRORS + (InstantiationException,))
            message = f"error: {one_line(err)}" if user_error else f"error: {type(err).__name__}: {one_line(err)}"
            _record_failure(message)
            multirun = _in_multirun()
            if os.environ.get("VISIONLAB_DEBUG") or not (user_error or multirun):
                raise
            log.error(message, exc_info=not user_error)
            if not multirun:
                print(message, file=sys.stderr)
                sys.exit(2)
            if _sweeper_reads_failures():
                raise
            return float("nan")

    wrapped = hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(task_function)

    def main() -> None:
        try:
            check_group_overrides(sys.argv[1:])
            sys.argv[1:] = resume_overrides(sys.argv[1:])
        except ConfigError as err:
            sys.exit(f"error: {err}")
        wrapped()

    return main
