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
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from visionlab.app.cli import hydra_entry
from visionlab.app.config import ConfigError, validate
from visionlab.data import InMemoryImageDataModule
from visionlab.scratch import SGD, BatchGenerator, Sequential, cross_entropy, from_torch
from visionlab.training.task import OPTIMIZER_CHECKS, ClassifierTask
from visionlab.utils.checks import integer, one_of, under
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
    correct = sum(
        int((net.forward(prepare(x)).argmax(1) == y).sum())
        for x, y in zip(images.split(batch_size), labels.split(batch_size))
    )
    return correct / len(labels)


def train_by_hand(
    net: Sequential,
    batches: BatchGenerator,
    test: Split,
    epochs: int,
    lr: float,
    momentum: float,
    prepare: Prepare,
    eval_batch_size: int,
) -> History:
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


def train_visionlab(
    cfg: DictConfig, net: torch.nn.Module, datamodule: InMemoryImageDataModule, dtype: torch.dtype
) -> History:
    """ClassifierTask and the `trainer` group's Trainer on the data module's train split,
    validating on its test split each epoch, in `dtype` (float64: Lightning's 64-true).

    The data module's train loader shuffles with its seed per epoch, so its batch order is
    the one BatchGenerator serves the by-hand network.
    """
    task = ClassifierTask(net, instantiate(cfg.optimizer), num_classes=datamodule.num_classes)
    epoch_log = EpochLog()
    precision = "64-true" if dtype == torch.float64 else "32-true"
    trainer = instantiate(cfg.trainer, precision=precision, logger=epoch_log)
    datamodule.trainer = trainer  # as fit(datamodule=...) would: its loaders follow the trainer's epoch
    trainer.fit(task, datamodule.train_dataloader(), datamodule.test_dataloader())
    return [
        {"train_acc": epoch_log.epochs[e]["train/acc"], "test_acc": epoch_log.epochs[e]["val/acc"]}
        for e in range(trainer.max_epochs)
    ]


# scratch.yaml's own keys; its data and model check theirs (the optimizer is SGD's, as on both sides)
CHECKS = (
    integer("seed", 0),
    integer("trainer.max_epochs", 1),
    one_of("dtype", DTYPES),
    *under("optimizer.", OPTIMIZER_CHECKS),
)


def check(cfg: DictConfig) -> torch.dtype:
    validate(cfg, CHECKS)
    if cfg.optimizer.get("_target_") != "torch.optim.SGD":
        raise ConfigError(
            f"optimizer._target_={cfg.optimizer.get('_target_')!r} is not allowed; expected "
            "torch.optim.SGD (the by-hand side has SGD only)"
        )
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
    datamodule: InMemoryImageDataModule = instantiate(cfg.data)
    augment = datamodule.augment
    if augment.enabled:
        on = ", ".join(
            f"data.augment.{f.name}={getattr(augment, f.name)}"
            for f in fields(augment)
            if getattr(augment, f.name) != f.default
        )
        raise ConfigError(
            f"{on}: the by-hand side trains on the plain batches, so the two sides would not see the "
            "same numbers; scratch.py compares them without augmentation"
        )
    datamodule.prepare_data()
    datamodule.setup()
    torch.manual_seed(cfg.seed)
    net = instantiate(cfg.model, input_shape=list(datamodule.input_shape), num_classes=datamodule.num_classes)
    by_hand = from_torch(net, dtype)  # copied before visionlab changes them
    to_float = datamodule.transform(train=False)
    output_dir = Path(cfg.paths.output_dir)

    start = time.perf_counter()
    train_x, train_y = datamodule.splits["train"]
    batches = BatchGenerator(train_x, train_y, batch_size=datamodule.batch_size, seed=datamodule.seed)
    hand = train_by_hand(
        by_hand,
        batches,
        datamodule.splits["test"],
        cfg.trainer.max_epochs,
        cfg.optimizer.lr,
        cfg.optimizer.get("momentum", 0.0),
        lambda x: to_float(x).to(dtype),
        datamodule.eval_batch_size,
    )
    hand_s = time.perf_counter() - start
    start = time.perf_counter()
    torch_history = train_visionlab(cfg, net, datamodule, dtype)
    torch_s = time.perf_counter() - start

    gap = max(abs(h[k] - t[k]) * 100 for h, t in zip(hand, torch_history) for k in ("train_acc", "test_acc"))
    result = {
        "by_hand": hand,
        "visionlab": torch_history,
        "max_gap_points": gap,
        "seconds": {"by_hand": hand_s, "visionlab": torch_s},
    }
    atomic_write(output_dir / "metrics.json", json.dumps(result, indent=2))
    print(report(result))
    return result


def report(result: dict[str, Any]) -> str:
    """The side-by-side table."""
    lines = ["epoch  train acc: by hand  visionlab   test acc: by hand  visionlab"]
    for e, (h, t) in enumerate(zip(result["by_hand"], result["visionlab"]), 1):
        lines.append(
            f"{e:5d}  {h['train_acc']:17.4f}  {t['train_acc']:9.4f}  {h['test_acc']:17.4f}  {t['test_acc']:9.4f}"
        )
    s = result["seconds"]
    lines.append(
        f"largest gap: {result['max_gap_points']:.2f} points; "
        f"time: by hand {s['by_hand']:.1f}s, visionlab {s['visionlab']:.1f}s"
    )
    return "\n".join(lines)


def _run(cfg: DictConfig) -> float:
    return compare(cfg)["max_gap_points"]


main = hydra_entry("scratch", _run, checks=CHECKS)
