"""A callback the resume tests inject into training subprocesses: at a chosen epoch and
step it announces itself with a marker file, then waits to be killed or signalled."""

import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class StallAt(Callback):
    def __init__(self, epoch: int, step: int, marker: str) -> None:
        self.epoch, self.step, self.marker = epoch, step, Path(marker)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.step:
            self.marker.write_text(str(trainer.global_step))
            deadline = time.monotonic() + 120
            while not trainer.received_sigterm and time.monotonic() < deadline:
                time.sleep(0.05)
