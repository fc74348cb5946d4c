"""By hand vs visionlab: train the notes' MLP twice on Fashion-MNIST, once with the
plain-tensor code of visionlab.scratch and once with ClassifierTask and a Lightning
Trainer, from the same initial weights, seed and batches, and print the per-epoch
accuracies side by side. `python scripts/scratch.py optimizer.lr=0.05`.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from visionlab.app.cli import hydra_entry
from visionlab.app.config import ConfigError, validate
from visionlab.data import FashionMNISTDataModule, MemoryLoader
from visionlab.data.loaders import LoaderEnv
from visionlab.models import MLP
from visionlab.scratch import SGD, BatchGenerator, Sequential, cross_entropy, from_torch
from visionlab.training.task import OPTIMIZER_CHECKS, ClassifierTask
from visionlab.utils.checks import integer, under
from visionlab.utils.io import atomic_write

log = logging.getLogger("visionlab")

DTYPES = {"float32": torch.float32, "float64": torch.float64}
Split = tuple[torch.Tensor, torch.Tensor]
History = list[dict[str, float]]  # one {"train_acc", "test_acc"} per epoch
Prepare = Callable[[torch.Tensor], torch.Tensor]  # uint8 images -> the network's input


class EpochLog(Logger):
    """Keeps the metrics Lightning logs at each epoch's end, in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs: dict[int, dict[str, float]] = defaultdict(dict)

    @property
    def name(self) -> str:
        return "epochs"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.epochs[int(metrics.get("epoch", 0))].update({k: float(v) for k, v in metrics.items()})

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


def accuracy(net: Sequential, split: Split, prepare: Prepare, batch_size: int) -> float:
    images, labels = split
    correct = sum(int((net.forward(prepare(x)).argmax(1) == y).sum())
                  for x, y in zip(images.split(batch_size), labels.split(batch_size)))
    return correct / len(labels)


def train_by_hand(net: Sequential, batches: BatchGenerator, test: Split, epochs: int, lr: float, momentum: float,
                  prepare: Prepare, eval_batch_size: int) -> History:
    """Forward, cross-entropy, backward, SGD step: every batch, every epoch, by hand."""
    optimizer = SGD(net.parameters(), lr, momentum)
    history: History = []
    for epoch in range(epochs):
        correct = seen = 0
        for x, y in batches.epoch(epoch):
            logits = net.forward(prepare(x))
            _, grad = cross_entropy(logits, y)
            net.backward(grad)
            optimizer.step()
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        history.append({"train_acc": correct / seen, "test_acc": accuracy(net, test, prepare, eval_batch_size)})
    return history


def train_visionlab(net: torch.nn.Module, datamodule: FashionMNISTDataModule, epochs: int, lr: float,
                    momentum: float, dtype: torch.dtype, output_dir: Path) -> History:
    """ClassifierTask + Trainer on the train split, validating on the test split each epoch,
    in `dtype` (float64 through Lightning's 64-true precision).

    The train loader is visionlab's MemoryLoader with the datamodule's seed, so its batch
    order per epoch is the one BatchGenerator serves the by-hand network.
    """
    task = ClassifierTask(net, partial(torch.optim.SGD, lr=lr, momentum=momentum), num_classes=datamodule.num_classes)
    epoch_log = EpochLog()
    precision: Literal["64-true", "32-true"] = "64-true" if dtype == torch.float64 else "32-true"
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, precision=precision, logger=epoch_log,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, log_every_n_steps=1, default_root_dir=output_dir)
    train_x, train_y = datamodule.splits["train"]
    train_loader = MemoryLoader(train_x, train_y, datamodule.batch_size, datamodule.transform(train=True),
                                shuffle=True, seed=datamodule.seed,
                                env=lambda: LoaderEnv(epoch=trainer.current_epoch))
    test_x, test_y = datamodule.splits["test"]
    test_loader = MemoryLoader(test_x, test_y, datamodule.eval_batch_size, datamodule.transform(train=False))
    trainer.fit(task, train_loader, test_loader)
    return [{"train_acc": epoch_log.epochs[e]["train/acc"], "test_acc": epoch_log.epochs[e]["val/acc"]}
            for e in range(epochs)]


# scratch.yaml names no `_target_`s: its groups take the checks of the classes they configure
CHECKS = (
    integer("seed", 0), *under("model.", MLP.CHECKS), *under("data.", FashionMNISTDataModule.CHECKS),
    *under("optimizer.", OPTIMIZER_CHECKS),
)


def check(cfg: DictConfig) -> torch.dtype:
    validate(cfg, CHECKS)
    if cfg.trainer.max_epochs < 1:
        raise ConfigError(f"trainer.max_epochs={cfg.trainer.max_epochs} is not allowed; expected an integer >= 1")
    if cfg.dtype not in DTYPES:
        raise ConfigError(f"dtype={cfg.dtype!r} is not allowed; expected one of {', '.join(DTYPES)}")
    return DTYPES[cfg.dtype]


def compare(cfg: DictConfig) -> dict[str, Any]:
    """Both trainings from one set of initial weights; returns both histories and the
    largest per-epoch accuracy gap, in points.

    Both sides get the same input numbers (visionlab's own uint8 -> float transform) in
    the same precision, so what differs is only the order of floating-point operations.
    Training amplifies such differences; in float64 they stay far below what flips a
    prediction, in float32 they can move accuracy by a few tenths of a point.
    """
    dtype = check(cfg)
    datamodule = FashionMNISTDataModule(data_dir=cfg.data.data_dir, batch_size=cfg.data.batch_size,
                                        eval_batch_size=cfg.data.eval_batch_size, val_size=0,
                                        normalization="scale", seed=cfg.seed, verify=cfg.data.verify)
    datamodule.prepare_data()
    datamodule.setup()
    torch.manual_seed(cfg.seed)
    net = MLP(datamodule.input_shape, datamodule.num_classes, hidden=list(cfg.model.hidden),
              activation=cfg.model.activation)
    by_hand = from_torch(net, dtype)  # copied before visionlab changes them
    to_float = datamodule.transform(train=False)
    lr, momentum, epochs = cfg.optimizer.lr, cfg.optimizer.momentum, cfg.trainer.max_epochs
    output_dir = Path(cfg.paths.output_dir)

    start = time.perf_counter()
    batches = BatchGenerator(*datamodule.splits["train"], batch_size=cfg.data.batch_size, seed=cfg.seed)
    hand = train_by_hand(by_hand, batches, datamodule.splits["test"], epochs, lr, momentum,
                         lambda x: to_float(x).to(dtype), cfg.data.eval_batch_size)
    hand_s = time.perf_counter() - start
    start = time.perf_counter()
    torch_history = train_visionlab(net, datamodule, epochs, lr, momentum, dtype, output_dir)
    torch_s = time.perf_counter() - start

    gap = max(abs(h[k] - t[k]) * 100 for h, t in zip(hand, torch_history) for k in ("train_acc", "test_acc"))
    result = {"by_hand": hand, "visionlab": torch_history, "max_gap_points": gap,
              "seconds": {"by_hand": hand_s, "visionlab": torch_s}}
    atomic_write(output_dir / "metrics.json", json.dumps(result, indent=2))
    print(report(result))
    return result


def report(result: dict[str, Any]) -> str:
    """The side-by-side table."""
    lines = ["epoch  train acc: by hand  visionlab   test acc: by hand  visionlab"]
    for e, (h, t) in enumerate(zip(result["by_hand"], result["visionlab"]), 1):
        lines.append(f"{e:5d}  {h['train_acc']:17.4f}  {t['train_acc']:9.4f}  "
                     f"{h['test_acc']:17.4f}  {t['test_acc']:9.4f}")
    s = result["seconds"]
    lines.append(f"largest gap: {result['max_gap_points']:.2f} points; "
                 f"time: by hand {s['by_hand']:.1f}s, visionlab {s['visionlab']:.1f}s")
    return "\n".join(lines)


def _run(cfg: DictConfig) -> float:
    return compare(cfg)["max_gap_points"]


main = hydra_entry("scratch", _run, checks=CHECKS)
