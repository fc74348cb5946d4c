"""MLflow beside TensorBoard: Lightning's MLFlowLogger into local files (no server), plus
the files a run is judged by (best checkpoint, history.png) as artifacts, and running
training metrics every few steps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from visionlab.utils.errors import ConfigError


class MLflowLogger(MLFlowLogger):
    """MLFlowLogger that, when a stage ends, logs the best checkpoint (under `checkpoints/`)
    and each of `artifacts` that exists.

    Lightning's own `log_model=True` logs the checkpoints of the last ModelCheckpoint that
    saved, which here is the `last.ckpt` callback, not the best one.
    """

    def __init__(self, *args: Any, artifacts: Sequence[str] = (), **kwargs: Any) -> None:
        uri = str(kwargs.get("tracking_uri") or "")
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)  # SQLite makes no folders
        super().__init__(*args, **kwargs)
        self.artifacts = [str(a) for a in artifacts]
        self._best: ModelCheckpoint | None = None
        self._logged: set[str] = set()

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        super().after_save_checkpoint(checkpoint_callback)
        if checkpoint_callback.monitor:
            self._best = checkpoint_callback

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        if self._initialized:
            best = self._best.best_model_path if self._best else ""
            for path, folder in [(best, "checkpoints"), *((a, None) for a in self.artifacts)]:
                if path and path not in self._logged and Path(path).is_file():
                    self.experiment.log_artifact(self.run_id, path, folder)
                    self._logged.add(path)
        super().finalize(status)


class StepMetrics(L.Callback):
    """Every `every_n_batches` training batches, the epoch's running train loss and accuracy
    to the MLflow loggers, at the optimizer step reached (`train_step/loss`, `train_step/acc`).

    The task logs its epoch means once per epoch, so as not to wait for the device every
    step; this asks it for the running means (`ClassifierTask.running_train_metrics`), one
    small copy to the host each time it logs.
    """

    def __init__(self, every_n_batches: int = 10) -> None:
        if not isinstance(every_n_batches, int) or every_n_batches < 1:
            raise ConfigError(f"every_n_batches={every_n_batches!r} must be an integer >= 1")
        self.every_n_batches = every_n_batches

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)]
        running = getattr(pl_module, "running_train_metrics", None)
        if not loggers or running is None or (batch_idx + 1) % self.every_n_batches:
            return
        metrics = {f"train_step/{name}": value for name, value in running().items()}
        for logger in loggers if metrics else ():
            logger.log_metrics(metrics, step=trainer.global_step)
