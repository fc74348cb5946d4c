"""Lightning callbacks with the Keras behaviour the notes rely on: EarlyStopping that
restores the best weights, ModelCheckpoint with save_best_only, a Keras-style summary at
start, and the `history` of a fit written as history.csv and history.png."""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, WeightAveraging
from lightning.pytorch.callbacks import EarlyStopping as _EarlyStopping
from lightning.pytorch.callbacks import ModelCheckpoint as _ModelCheckpoint
from lightning.pytorch.callbacks import ModelSummary as _ModelSummary
from torch import Tensor

from visionlab.training.hook_cost import CachedStateKey
from visionlab.training.trainer_state import averaged_module, callbacks_of
from visionlab.utils.errors import ConfigError
from visionlab.utils.io import atomic_path, atomic_write
from visionlab.utils.summary import model_summary

log = logging.getLogger("visionlab")


class EarlyStopping(CachedStateKey, _EarlyStopping):
    """Lightning's EarlyStopping plus Keras' `restore_best_weights`: the weights of the best
    monitored epoch are kept in memory and put back when training ends, so the module
    (and a test run on it) holds the best weights, not the last ones.

    The copy lives only in memory: a resumed fit restores the best epoch since the resume.
    Until a validation has run (validation off, or max_steps / max_time ending the run before
    the first one) there is nothing to monitor, so nothing is checked, as Lightning's
    ModelCheckpoint does, rather than failing the run at the end of its first epoch.
    """

    def __init__(self, *args: Any, restore_best_weights: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.restore_best_weights = restore_best_weights
        self.best_weights: dict[str, Tensor] | None = None
        self.best_epoch: int | None = None
        self.restored = False
        self.validated = False

    # Lightning checks in one of these two hooks and, on an improvement, replaces best_score
    # by the monitored tensor (on the metric's device): a new object means a new best. No
    # comparison of values, which would mix the devices of the old and new best.
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.validated and self.monitor not in trainer.callback_metrics:
            return
        before = self.best_score
        super().on_train_epoch_end(trainer, pl_module)
        self._keep_if_best(before, trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.validated = self.validated or not trainer.sanity_checking
        before = self.best_score
        super().on_validation_end(trainer, pl_module)
        self._keep_if_best(before, trainer, pl_module)

    def _keep_if_best(self, before: Tensor, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.restore_best_weights and self.best_score is not before:
            # with weight averaging, the averaged weights: the ones validation scored
            averaged = averaged_model(trainer)
            state = averaged.state_dict() if averaged is not None else pl_module.state_dict()
            self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
            self.best_epoch = trainer.current_epoch

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.restore_best_weights and self.best_weights is not None and self.best_epoch is not None:
            pl_module.load_state_dict(self.best_weights)
            averaged = averaged_model(trainer)
            if averaged is not None:  # WeightAveraging copies its average in at train end too, before or after this
                averaged.load_state_dict(self.best_weights)
            self.restored = True
            if trainer.is_global_zero:
                log.info(
                    "EarlyStopping: restored the weights from the end of the best epoch, epoch %d (%s=%.4f)",
                    self.best_epoch,
                    self.monitor,
                    float(self.best_score),
                )


def averaged_model(trainer: L.Trainer) -> L.LightningModule | None:
    """The averaged copy of the module kept by Lightning's WeightAveraging callback
    (EMAWeightAveraging, ...) during a fit, or None."""
    averaging = next((cb for cb in callbacks_of(trainer) if isinstance(cb, WeightAveraging)), None)
    if averaging is None:
        return None
    return averaged_module(averaging)


def restored_best_weights(trainer: L.Trainer) -> bool:
    """True when an EarlyStopping callback put the best weights back into the module."""
    return any(isinstance(cb, EarlyStopping) and cb.restored for cb in callbacks_of(trainer))


class ModelCheckpoint(CachedStateKey, _ModelCheckpoint):
    """Lightning's ModelCheckpoint with Keras' `save_best_only` (True: keep only the best
    checkpoint; False: keep one per epoch); `save_weights_only` is Lightning's own. The best
    checkpoint's path is printed when fitting ends (with a `monitor`: without one there is no best)."""

    def __init__(self, *args: Any, save_best_only: bool | None = None, **kwargs: Any) -> None:
        if save_best_only is not None:
            kwargs["save_top_k"] = 1 if save_best_only else -1
        super().__init__(*args, **kwargs)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A run folder resumed after a copy or a move holds its checkpoints under a new
        dirpath: the saved paths are rebased onto it (files no longer there are forgotten),
        so the best checkpoint tested is the run's own, not the original's."""
        saved = state_dict.get("dirpath")
        if saved and self.dirpath and Path(saved) != Path(self.dirpath):
            state_dict = {**rebase_paths(state_dict, Path(saved), Path(self.dirpath)), "dirpath": self.dirpath}
        super().load_state_dict(state_dict)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.best_model_path and self.monitor:
            score = f" ({self.monitor}={float(self.best_model_score):.4f})" if self.best_model_score is not None else ""
            log.info("Best checkpoint: %s%s", self.best_model_path, score)


def rebase_paths(state: dict[str, Any], old: Path, new: Path) -> dict[str, Any]:
    """ModelCheckpoint's state with the paths under `old` moved under `new`; a path whose
    file is not under `new` becomes empty and leaves the best-k table."""

    def moved(path: str) -> str:
        if not path:
            return path
        candidate = new / Path(path).relative_to(old) if Path(path).is_relative_to(old) else None
        return str(candidate) if candidate is not None and candidate.is_file() else ""

    out = dict(state)
    for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
        if isinstance(state.get(key), str):
            out[key] = moved(state[key])
    best_k = {moved(str(p)): score for p, score in (state.get("best_k_models") or {}).items()}
    out["best_k_models"] = {p: score for p, score in best_k.items() if p}
    if not out.get("best_model_path"):
        out["best_model_score"] = None
    return out


class KerasModelSummary(_ModelSummary):
    """The net's layers, output shapes and parameter counts, logged when fitting starts.

    It subclasses Lightning's ModelSummary so Lightning does not add its own table too.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        net = getattr(pl_module, "net", pl_module)
        shape = getattr(net, "input_shape", None)
        if shape is None:
            super().on_fit_start(trainer, pl_module)
            return
        log.info("\n%s", model_summary(net, shape))


HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds")


class History(Callback):
    """Keras' `history`: one row per epoch (train and val loss and accuracy, learning rate,
    epoch seconds) written to `history.csv` after every epoch, and `history.png` plotting train
    against val every `plot_every_n_epochs` epochs and when training ends (a plot costs a
    few tenths of a second, a tenth of a small MLP epoch on a CPU). Epochs count from 0,
    as everywhere in visionlab: Lightning's checkpoint names, logs and progress bar.

    Lightning calls the task's `on_train_epoch_end` (where it logs train/*) after this
    callback's, so an epoch's row is completed when the next epoch starts or fitting ends.
    Rows are part of the callback state, so a resumed fit continues the same history.
    """

    def __init__(self, dirpath: str | Path, plot: bool = True, plot_every_n_epochs: int = 1) -> None:
        if plot_every_n_epochs < 1:
            raise ConfigError(f"History plot_every_n_epochs={plot_every_n_epochs} must be >= 1")
        self.dirpath = Path(dirpath)
        self.plot, self.plot_every_n_epochs = plot, plot_every_n_epochs
        self.rows: list[dict[str, float]] = []
        self._pending: dict[str, float] | None = None
        self._start = 0.0
        self._trainer: L.Trainer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer
        self._start = time.perf_counter()  # a run resumed mid-epoch starts no new epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        optimizers = trainer.optimizers
        lr = optimizers[0].param_groups[0]["lr"] if optimizers else math.nan
        seconds = time.perf_counter() - self._start
        self._pending = {"epoch": trainer.current_epoch, "lr": float(lr), "epoch_seconds": seconds}
        pl_module.log("time/epoch_s", seconds)  # TensorBoard's view of the same figure

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer, final=True)

    def _completed(self, trainer: L.Trainer) -> dict[str, float]:
        """The pending row with the epoch's logged train and val metrics."""
        metrics = trainer.callback_metrics
        row = dict(self._pending or {})
        for column in HISTORY_COLUMNS[1:5]:
            value = metrics.get(column.replace("_", "/", 1))
            row[column] = float(value) if value is not None else math.nan
        return row

    def _flush(self, trainer: L.Trainer, final: bool = False) -> None:
        if self._pending is not None:
            self.rows.append(self._completed(trainer))
            self._pending = None
        elif not final:
            return
        if trainer.is_global_zero and self.rows:
            self.write(plot=final or len(self.rows) % self.plot_every_n_epochs == 0)

    def write(self, plot: bool = True) -> None:
        """history.csv, and history.png when `plot` (and the callback's `plot`) is on."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: row.get(k, math.nan) for k in HISTORY_COLUMNS} for row in self.rows)
        atomic_write(self.dirpath / "history.csv", buffer.getvalue())
        if self.plot and plot:
            plot_history(self.rows, self.dirpath / "history.png")

    def state_dict(self) -> dict[str, Any]:
        # checkpoints are saved at epoch end, before that epoch's row is flushed
        pending = [self._completed(self._trainer)] if self._pending and self._trainer else []
        return {"rows": [dict(r) for r in self.rows] + pending}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(r) for r in state_dict.get("rows", [])]


def plot_history(rows: list[dict[str, float]], path: Path) -> None:
    """Loss and accuracy per epoch, train against val (the notes' `pd.DataFrame(history).plot()`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "acc")):
        for split, style in (("train", "o-"), ("val", "s--")):
            ax.plot(epochs, [r[f"{split}_{metric}"] for r in rows], style, label=f"{split} {metric}")
        ax.set_xlabel("epoch (from 0)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title("accuracy" if metric == "acc" else "loss")
        ax.grid(True)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
