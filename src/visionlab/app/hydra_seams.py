"""The private names of Hydra visionlab uses, each reached through one function here.

tests/test_seams.py fails loudly when the pinned Hydra version changes them.
"""

from __future__ import annotations

import argparse
from typing import Any

from hydra._internal.callbacks import Callbacks
from hydra._internal.utils import get_args_parser
from hydra.core.utils import JobReturn
from omegaconf import DictConfig


def args_parser() -> argparse.ArgumentParser:
    """The argparse parser of a Hydra command line (its flags and the overrides), as
    `hydra.main` parses `sys.argv` with it."""
    return get_args_parser()


def job_callbacks(cfg: DictConfig) -> Callbacks:
    """The Hydra callbacks (`hydra.callbacks`) of a composed config, as `hydra.main` runs them
    around a job (on_run_start, on_job_start, ...)."""
    return Callbacks(cfg)


def job_result(job: JobReturn) -> Any:
    """What a launched job gave back: its return value, or the exception that ended it.
    (JobReturn.return_value raises that exception and writes to stderr instead.)"""
    return job._return_value
