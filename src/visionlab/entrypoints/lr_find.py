"""Learning-rate finder: Lightning's Tuner.lr_find (a short run whose learning rate grows
exponentially from tune.min_lr to tune.max_lr, one step per value) on the composed model
and data, with its suggestion (the steepest fall of the loss) saved as lr_find.png and
lr_find.json in the run folder.

`python scripts/lr_find.py [any train overrides]` prints the `optimizer.lr=` override to
use; `python scripts/train.py tune.lr_find=true` runs it first and trains with it.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.tuner import Tuner
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf, open_dict

from visionlab.app.cli import hydra_entry
from visionlab.app.config import ConfigError
from visionlab.entrypoints.train import CHECKS, build
from visionlab.utils.figures import DPI, save_png
from visionlab.utils.io import atomic_write

log = logging.getLogger("visionlab")


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


def find_lr(cfg: DictConfig) -> tuple[LRFindResult, Path]:
    """Run Lightning's LR finder on the data, model and optimizer of `cfg` (a train config),
    without its callbacks and loggers; returns the result and the run folder."""
    min_lr, max_lr, steps = check_options(cfg.tune)
    finder_cfg = cfg.copy()
    with open_dict(finder_cfg):
        finder_cfg.callbacks, finder_cfg.logger = None, None  # the finder swaps them out anyway
    datamodule, task, trainer = build(finder_cfg)
    finder = Tuner(trainer).lr_find(task, datamodule=datamodule, min_lr=min_lr, max_lr=max_lr,
                                    num_training=steps, mode="exponential", update_attr=False)
    if finder is None:
        raise ConfigError("the learning-rate finder does not run with trainer.fast_dev_run=true")
    suggestion = finder.suggestion()
    tried = len(finder.results["lr"])
    if suggestion is None:
        raise ConfigError(f"the learning-rate finder tried {tried} learning rates, too few for a suggestion; "
                          "raise tune.num_training or the training batches (trainer.limit_train_batches, max_epochs)")
    result = LRFindResult([float(v) for v in finder.results["lr"]], [float(v) for v in finder.results["loss"]],
                          float(suggestion), min_lr, max_lr)
    return result, Path(trainer.default_root_dir)


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
    data = {"suggestion": result.suggestion, "override": f"optimizer.lr={result.suggestion:.3g}",
            "min_lr": result.min_lr, "max_lr": result.max_lr,
            "lr": result.lrs, "loss": [v if math.isfinite(v) else None for v in result.losses]}
    atomic_write(out / "lr_find.json", json.dumps(data, indent=2))


def tune_learning_rate(cfg: DictConfig) -> dict[str, Any]:
    """For train.py's tune.lr_find=true: find, write the files, and set cfg.optimizer.lr to
    the suggestion (rounded to 3 digits) so everything built afterwards uses it."""
    result, out = find_lr(cfg)
    write_result(result, out)
    lr = float(f"{result.suggestion:.3g}")
    previous = OmegaConf.select(cfg, "optimizer.lr")
    with open_dict(cfg):
        cfg.optimizer.lr = lr
    log.info("tune.lr_find: optimizer.lr=%g (was %s); lr_find.png and lr_find.json in %s", lr, previous, out)
    return {"optimizer.lr": lr, "configured_lr": previous, "suggestion": result.suggestion}


def run(cfg: DictConfig) -> float:
    """scripts/lr_find.py: find, write, print the override; returns the suggestion."""
    result, out = find_lr(cfg)
    write_result(result, out)
    print(f"optimizer.lr={result.suggestion:.3g}")
    log.info("Wrote lr_find.png and lr_find.json to %s", out)
    return result.suggestion


main = hydra_entry("lr_find", run, checks=CHECKS)

if __name__ == "__main__":
    main()
