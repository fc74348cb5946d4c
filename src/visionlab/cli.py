"""What every Hydra entry point shares: config location, early override checks, and bad
input reported as one line instead of a traceback."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig

from visionlab.config import CONF_DIR, ConfigError, check_group_overrides
from visionlab.data.sources import DataSourceError

log = logging.getLogger("visionlab")

# Errors that mean "the input is wrong", not "the code is wrong": reported in one line.
USER_ERRORS = (ConfigError, ValueError, DataSourceError, FileNotFoundError)


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


def hydra_entry(config_name: str, fn: Callable[[DictConfig], Any]) -> Callable[[], None]:
    """A `main()` that runs `fn(cfg)` under Hydra with the checks above.

    In a multirun a failing job is logged and returns NaN, so the other jobs go on.
    Set VISIONLAB_DEBUG=1 to get full tracebacks instead.
    """

    def task_function(cfg: DictConfig) -> Any:
        try:
            return fn(cfg)
        except USER_ERRORS + (InstantiationException,) as err:
            if os.environ.get("VISIONLAB_DEBUG"):
                raise
            message = f"error: {one_line(err)}"
            log.error(message)
            if _in_multirun():
                return float("nan")
            print(message, file=sys.stderr)
            sys.exit(2)

    wrapped = hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(task_function)

    def main() -> None:
        try:
            check_group_overrides(sys.argv[1:])
        except ConfigError as err:
            sys.exit(f"error: {err}")
        wrapped()

    return main
