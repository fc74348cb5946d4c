"""Lightning's learning-rate finder (Tuner.lr_find: a short run whose learning rate grows
exponentially from tune.min_lr to tune.max_lr, one step per value) and its files: the
suggestion (the steepest fall of the loss) as lr_find.png and lr_find.json.

visionlab.app.assemble gives it the run's data, task and a Trainer without callbacks or
loggers; `scripts/lr_find.py` and `train.py tune.lr_find=true` both come through there.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.tuner import Tuner
from matplotlib.figure import Figure

from visionlab.utils.errors import ConfigError
from visionlab.utils.figures import DPI, save_png
from visionlab.utils.io import atomic_write


@dataclass(frozen=True)
class LRFindResult:
    """The learning rates tried, the smoothed loss at each (NaN where none), the suggestion."""

    lrs: list[float]
    losses: list[float]
    suggestion: float
    min_lr: float
    max_lr: float


def check_options(tune: Any) -> tuple[float, float, int]:
    """(min_lr, max_lr, num_training) of the `tune` block, refused in one line when unusable."""
    min_lr, max_lr, steps = float(tune.min_lr), float(tune.max_lr), tune.num_training
    if not 0 < min_lr < max_lr:
        raise ConfigError(f"tune.min_lr={tune.min_lr}, tune.max_lr={tune.max_lr}: expected 0 < min_lr < max_lr")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 3:
        raise ConfigError(f"tune.num_training={steps!r} is not allowed; expected an integer >= 3 (steps to try)")
    return min_lr, max_lr, steps


def find_lr(datamodule: L.LightningDataModule, task: L.LightningModule, trainer: L.Trainer, tune: Any) -> LRFindResult:
    """Run Lightning's LR finder on `task` and `datamodule` with `trainer` (its options: `tune`)."""
    min_lr, max_lr, steps = check_options(tune)
    finder = Tuner(trainer).lr_find(
        task,
        datamodule=datamodule,
        min_lr=min_lr,
        max_lr=max_lr,
        num_training=steps,
        mode="exponential",
        update_attr=False,
    )
    if finder is None:
        raise ConfigError("the learning-rate finder does not run with trainer.fast_dev_run=true")
    suggestion = finder.suggestion()
    tried = len(finder.results["lr"])
    if suggestion is None:
        raise ConfigError(
            f"the learning-rate finder tried {tried} learning rates, too few for a suggestion; "
            "raise tune.num_training or the training batches (trainer.limit_train_batches, max_epochs)"
        )
    return LRFindResult(
        [float(v) for v in finder.results["lr"]],
        [float(v) for v in finder.results["loss"]],
        float(suggestion),
        min_lr,
        max_lr,
    )


def lr_find_figure(result: LRFindResult) -> Figure:
    """Smoothed loss against learning rate on a log axis, the suggestion marked."""
    fig = Figure(figsize=(5.5, 4.0), dpi=DPI)
    ax = fig.subplots()
    ax.plot(result.lrs, result.losses, color="navy")
    ax.set_xscale("log")
    ax.axvline(result.suggestion, color="crimson", linestyle="--", label=f"suggestion {result.suggestion:.3g}")
    index = result.lrs.index(result.suggestion)
    ax.plot([result.suggestion], [result.losses[index]], "o", color="crimson")
    ax.set(xlabel="learning rate (log scale)", ylabel="training loss (smoothed)", title="learning-rate finder")
    ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.14, bottom=0.13, top=0.9, right=0.96)
    return fig


def write_result(result: LRFindResult, out: Path) -> None:
    """lr_find.png and lr_find.json (NaN losses as null) in `out`."""
    save_png(lr_find_figure(result), out / "lr_find.png")
    data = {
        "suggestion": result.suggestion,
        "override": f"optimizer.lr={result.suggestion:.3g}",
        "min_lr": result.min_lr,
        "max_lr": result.max_lr,
        "lr": result.lrs,
        "loss": [v if math.isfinite(v) else None for v in result.losses],
    }
    atomic_write(out / "lr_find.json", json.dumps(data, indent=2))
