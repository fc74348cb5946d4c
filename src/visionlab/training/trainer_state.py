"""Lightning's run-time state, and the one place visionlab reaches into Lightning's internals.

`trainer.datamodule`, `trainer.callbacks`, `trainer.log_every_n_steps` and
`trainer.fast_dev_run` are public and documented, but assigned outside `Trainer.__init__`
(in the data, callback, logger and setup connectors), so type checkers cannot see them.
The rest are Lightning internals (private names, or loop state it does not document) that
visionlab needs; each is read here and nowhere else, and tests/test_seams.py fails loudly
when the pinned Lightning version changes one of them.
"""

from __future__ import annotations

from typing import Any, cast

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.core.saving import _default_map_location


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


def loggers_write_this_step(trainer: Trainer) -> bool:
    """Whether Lightning writes this training step's metrics to its loggers: its own rule
    (the logger connector's `should_update_logs`, as its `update_train_step_metrics` asks it:
    every log_every_n_steps steps, when stopping, every step of a fast_dev_run)."""
    return bool(trainer._logger_connector.should_update_logs) or fast_dev_run(trainer)


def batches_done(trainer: Trainer) -> int:
    """Training batches whose step has run in the current epoch (a resumed fit counts those
    before its checkpoint): the fit loop's batch progress, which Lightning does not document.
    `processed`, not `completed`: a checkpoint saved in on_train_batch_end (ModelCheckpoint's
    every_n_train_steps) comes before Lightning counts that batch completed, and Lightning
    counts it when it restores one, so the resumed loader must start after it."""
    current = trainer.fit_loop.epoch_loop.batch_progress.current  # typed as its base class; has `processed`
    return int(current.processed)  # type: ignore[attr-defined]


def averaged_module(averaging: WeightAveraging) -> LightningModule | None:
    """The averaged copy of the module a WeightAveraging callback keeps during a fit (its
    AveragedModel's `module`, for which Lightning offers no public accessor), or None."""
    average = averaging._average_model
    return cast(LightningModule, average.module) if average is not None else None


# Lightning's map_location for checkpoints: tensors go back where they were saved, to the
# CPU when that device is missing (what `load_from_checkpoint` does by default).
default_map_location = _default_map_location
