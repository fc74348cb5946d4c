"""Surviving kills and preemption: checkpoints written atomically, and a checkpoint saved
when the job is asked to stop (SIGTERM, or SIGUSR1 as clusters send before a time limit)."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from visionlab.utils.io import atomic_path

log = logging.getLogger("visionlab")


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file, then rename: a kill mid-save keeps the old checkpoint."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


class PreemptionCheckpoint(Callback):
    """Save `last.ckpt` when the job gets SIGTERM or SIGUSR1, then let it exit.

    Lightning turns SIGTERM into a clean stop after the current step; this callback also
    routes SIGUSR1 there (outside SLURM, whose own handler requeues the job) and writes
    the checkpoint a resubmitted job resumes from with `ckpt_path=<run>/checkpoints/last.ckpt`.
    """

    def __init__(self, dirpath: str, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "SLURM_JOB_ID" not in os.environ and hasattr(signal, "SIGUSR1"):
            signal.signal(signal.SIGUSR1, lambda signum, frame: os.kill(os.getpid(), signal.SIGTERM))

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            # the task checks its losses for NaN only where the host waits anyway: check the
            # steps since then before their weights are saved over the last good checkpoint
            try:
                if callable(check := getattr(pl_module, "check_finite_loss", None)):
                    check()
            except FloatingPointError as err:
                log.error("stopped by a signal; %s: %s not replaced", err, self.path)
                return
            trainer.save_checkpoint(self.path)
            log.warning("stopped by a signal: saved %s; resume with ckpt_path=%s", self.path, self.path)
