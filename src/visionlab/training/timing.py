"""The clock of a fit, the airbench way: from the start of training (data read, net built,
sanity check done) to its end, on a synchronised device clock, written as fit_clock.json
for the time-to-accuracy runner (visionlab.tools.speedrun)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from visionlab.utils.io import atomic_write


def _synchronize(module: L.LightningModule) -> None:
    """Wait for queued GPU work, so the clock reads what the device did (only at the two ends)."""
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)


class FitClock(Callback):
    """Seconds from `on_train_start` to `on_train_end` (validation included), and the wall
    times of both ends (to tell start-up and what follows the fit apart), in `dirpath`."""

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)
        self._start = 0.0
        self._start_wall = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _synchronize(pl_module)
        self._start, self._start_wall = time.perf_counter(), time.time()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _synchronize(pl_module)
        seconds = time.perf_counter() - self._start
        if trainer.is_global_zero:
            atomic_write(
                self.dirpath / "fit_clock.json",
                json.dumps(
                    {
                        "train_seconds": seconds,
                        "train_start": self._start_wall,
                        "train_end": time.time(),
                        "epochs": trainer.current_epoch,  # epochs completed (the loop has counted the last one)
                        "device": str(pl_module.device),
                    },
                    indent=2,
                ),
            )
