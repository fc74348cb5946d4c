"""Typed access to the Trainer attributes Lightning's connectors set at run time.

`trainer.datamodule`, `trainer.callbacks`, `trainer.log_every_n_steps` and
`trainer.fast_dev_run` are public and documented, but assigned outside `Trainer.__init__`
(in the data, callback, logger and setup connectors), so type checkers cannot see them.
These accessors are the one place that says so.
"""

from __future__ import annotations

from typing import Any

from lightning import Callback, Trainer


def datamodule_of(trainer: Trainer) -> Any:
    """The LightningDataModule the trainer runs on (None when it runs on plain loaders)."""
    return trainer.datamodule  # type: ignore[attr-defined]


def callbacks_of(trainer: Trainer) -> list[Callback]:
    """The trainer's callbacks, in the order Lightning calls them."""
    return trainer.callbacks  # type: ignore[attr-defined]


def log_every_n_steps(trainer: Trainer) -> int:
    """How often (in optimizer steps) Lightning writes step metrics to its loggers."""
    return int(trainer.log_every_n_steps)  # type: ignore[attr-defined]


def fast_dev_run(trainer: Trainer) -> bool:
    """True when the trainer runs as a fast_dev_run (every step is logged)."""
    return bool(trainer.fast_dev_run)  # type: ignore[attr-defined]
