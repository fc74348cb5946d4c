"""Speed benchmark: visionlab's real training path against Lightning's floor and a minimal
plain PyTorch loop.

For each case (model x batch size) three paths train the same model from the same initial
weights on the same data with the same optimizer and batch size, alternating in one
process: visionlab (its Trainer, task, DataModule and default callbacks), `lightning` (the
plainest LightningModule on pre-normalised tensors, no callbacks, no logger: what any
Lightning run costs) and `plain` (no framework). Each reports median seconds per epoch with
their spread (min-max): training only, and whole epochs (training, validation and
epoch-end work). Also samples/s, the ratios to plain, the share of the machine's measured
matmul throughput, and test accuracy. This machine is noisy: alternate (--repeats) and read
medians, not single epochs.

    python scripts/benchmark.py                      # the full table (slow on a CPU)
    python scripts/benchmark.py --cases notes_mlp --batch-sizes 32 --epochs 2
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, open_dict
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from visionlab.app.config import compose_config
from visionlab.training.task import fused_kernels
from visionlab.training.trainer_state import callbacks_of
from visionlab.utils.io import atomic_write
from visionlab.utils.quiet import quiet_known_noise

# Epoch clocks: wall time, or this process's CPU time, steadier on a shared machine (with
# OMP_NUM_THREADS=1; more threads add their spin-waits). Set by --clock.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]

# Each case: the Hydra overrides that make it, on top of the default config.
CASES: dict[str, tuple[str, ...]] = {
    "notes_mlp": ("model=mlp", "optimizer=sgd", "scheduler=none"),
    "notes_cnn": ("model=cnn", "model.padding=0", "optimizer=adam", "scheduler=none"),
    "default_cnn": ("model=cnn", "optimizer=adam", "scheduler=none"),
}
PATHS = ("visionlab", "lightning", "plain")


@dataclass
class Result:
    case: str
    batch_size: int
    path: str
    epoch_seconds: list[float] = field(default_factory=list)  # training only
    whole_epoch_seconds: list[float] = field(default_factory=list)  # with validation and epoch-end work
    test_acc: float = float("nan")

    def add(self, seconds: list[float], whole: list[float]) -> None:
        self.epoch_seconds += seconds
        self.whole_epoch_seconds += whole

    @property
    def median(self) -> float:
        return statistics.median(self.epoch_seconds)

    @property
    def median_whole(self) -> float:
        return statistics.median(self.whole_epoch_seconds)


class EpochTimer(Callback):
    """Seconds of each epoch: training only (first batch to the start of validation), and
    whole (one epoch start to the next, or to the end of training: validation and every
    callback's epoch-end work included)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.whole: list[float] = []
        self._start = 0.0

    def _lap(self, pl_module: L.LightningModule) -> float:
        synchronize(pl_module.device)
        return clock() - self._start

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if len(self.whole) < len(self.seconds):
            self.whole.append(self._lap(pl_module))
        synchronize(pl_module.device)
        self._start = clock()

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.seconds.append(self._lap(pl_module))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if len(self.whole) < len(self.seconds):
            self.whole.append(self._lap(pl_module))


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_device(cfg: DictConfig) -> torch.device:
    """The device Lightning trains on for this config: a GPU when allowed and present."""
    allowed = str(cfg.trainer.get("accelerator", "auto")) in ("auto", "gpu", "cuda")
    return torch.device("cuda" if allowed and torch.cuda.is_available() else "cpu")


def autocast_dtype(precision: object) -> torch.dtype | None:
    """The autocast dtype of a Lightning mixed precision, None for full precision."""
    return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(precision))


def compose(overrides: Sequence[str], output_dir: str) -> DictConfig:
    """The config scripts/train.py would use for `overrides`, writing under `output_dir`."""
    cfg = compose_config(overrides, output_dir)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


@functools.cache
def matmul_gflops(device: torch.device, dtype: torch.dtype = torch.float32, budget_s: float = 0.5,
                  max_size: int = 4096) -> float:
    """Measured matmul throughput of the device in the training dtype, the compute ceiling.

    The size doubles from 256 until one product takes a 20th of `budget_s`, then products of
    that size are timed for about `budget_s`: under a second even where the dtype is emulated
    (bfloat16 on a CPU without AVX512-BF16 is ~100x slower than float32). Measured once per
    (device, dtype) in a run, so every row of a table shares one ceiling.
    """
    size = 256
    while True:
        a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
        a @ b  # warm-up: thread pools, kernels
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        once = time.perf_counter() - start
        if once >= budget_s / 20 or size >= max_size:
            break
        size *= 2
    repeats = max(1, int(budget_s / max(once, 1e-9)))
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def train_flops(net: nn.Module, batch: torch.Tensor, labels: torch.Tensor) -> int:
    """FLOPs of one forward and backward pass on `batch`."""
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(net(batch), labels).backward()
    net.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def run_visionlab(cfg: DictConfig) -> tuple[list[float], list[float], float, nn.Module]:
    """Fit through build(): Trainer, task module, DataModule and the default callbacks."""
    from visionlab.entrypoints.train import build

    datamodule, task, trainer = build(cfg)
    timer = EpochTimer()
    callbacks_of(trainer).append(timer)
    trainer.fit(task, datamodule=datamodule)
    test = trainer.test(task, datamodule=datamodule, verbose=False)
    return timer.seconds, timer.whole, float(test[0]["test/acc"]), task.net


@dataclass
class Prepared:
    """What both reference paths train on: normalised tensors on the device, the net."""

    device: torch.device
    dtype: torch.dtype | None
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]
    net: nn.Module

    def batches(self, split: str, size: int,
                generator: torch.Generator | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The split in batches; shuffled (randperm) when a generator is given."""
        x, y = self.splits[split]
        order = torch.randperm(len(y), generator=generator).to(self.device) if generator is not None else None
        if order is None:
            return list(zip(x.split(size), y.split(size)))
        return [(x[i], y[i]) for i in order.split(size)]


def prepare(cfg: DictConfig) -> Prepared:
    """The data read once and normalised (no per-batch work), and the net, seeded as visionlab seeds it."""
    L.seed_everything(cfg.seed, verbose=False)
    device, dtype = training_device(cfg), autocast_dtype(cfg.trainer.get("precision"))
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup()
    to_float = datamodule.transform()
    splits = {}
    for name in ("train", "val", "test"):
        images, labels = datamodule.splits[name]
        x = to_float(images).to(device)
        splits[name] = (x.to(memory_format=torch.channels_last) if cfg.channels_last else x, labels.to(device))
    net = instantiate(cfg.model, input_shape=list(datamodule.input_shape), num_classes=datamodule.num_classes)
    net = net.to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if cfg.compile:
        net.compile()
    return Prepared(device, dtype, splits, net)


class Batches:
    """A split's batches as one iterable (Lightning takes any; a list would be many
    loaders), reshuffled each pass when a seed is given."""

    def __init__(self, data: Prepared, split: str, size: int, seed: int | None = None) -> None:
        self.data, self.split, self.size = data, split, size
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def __len__(self) -> int:
        return math.ceil(len(self.data.splits[self.split][1]) / self.size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.data.batches(self.split, self.size, self.generator))


class MinimalModule(L.LightningModule):
    """The plainest LightningModule: cross-entropy, the config's optimizer, validation accuracy."""

    def __init__(self, net: nn.Module, optimizer: Callable) -> None:
        super().__init__()
        self.net, self.optimizer = net, optimizer

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val/acc", (self.net(x).argmax(1) == y).float().mean(), batch_size=len(y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer(self.parameters(), **fused_kernels(self.optimizer, self.device))  # as visionlab's


def run_lightning(cfg: DictConfig, epochs: int) -> tuple[list[float], list[float], float]:
    """Lightning's floor: the same net and tensors through `Trainer.fit` with nothing else on."""
    data = prepare(cfg)
    module = MinimalModule(data.net, instantiate(cfg.optimizer))
    timer = EpochTimer()
    trainer = L.Trainer(max_epochs=epochs, accelerator=data.device.type, devices=1,
                        precision=cfg.trainer.get("precision", "32-true"), logger=False, callbacks=[timer],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    trainer.fit(module, Batches(data, "train", cfg.data.batch_size, cfg.seed),
                Batches(data, "val", cfg.data.eval_batch_size))
    return timer.seconds, timer.whole, data_accuracy(data, "test", cfg.data.eval_batch_size)


def data_accuracy(data: Prepared, split: str, batch_size: int) -> float:
    """Accuracy of the net on a split, in eval mode and the run's autocast dtype, read
    back once (a timing point)."""
    return float(correct_predictions(data, split, batch_size)) / max(len(data.splits[split][1]), 1)


def correct_predictions(data: Prepared, split: str, batch_size: int) -> torch.Tensor:
    """The count of right predictions on a split, on the data's device. The net is put
    there first: Lightning's teardown moves a module back to the CPU after `fit`."""
    net = data.net.to(data.device)
    net.eval()
    correct = torch.zeros((), dtype=torch.long, device=data.device)
    with torch.no_grad(), autocast(data):
        for xb, yb in data.batches(split, batch_size):
            correct += (net(xb).argmax(1) == yb).sum()
    return correct


def autocast(data: Prepared) -> AbstractContextManager:
    """The run's autocast, or nothing at full precision."""
    return nullcontext() if data.dtype is None else torch.autocast(data.device.type, dtype=data.dtype)


def run_plain(cfg: DictConfig, epochs: int) -> tuple[list[float], list[float], float, int]:
    """The minimal loop: normalised float tensors in memory, randperm batches, no framework,
    and a validation pass (accuracy) after each epoch.

    It trains on the device and in the autocast dtype Lightning would use for `cfg`.
    """
    data = prepare(cfg)
    net, device = data.net, data.device
    factory = instantiate(cfg.optimizer)
    opt = factory(net.parameters(), **fused_kernels(factory, device))
    scaler = torch.amp.GradScaler(device.type, enabled=data.dtype is torch.float16)
    batches, seconds, whole = Batches(data, "train", cfg.data.batch_size, cfg.seed), [], []
    for _ in range(epochs):
        net.train()
        synchronize(device)
        start = clock()
        for xb, yb in batches:
            with autocast(data):
                loss = F.cross_entropy(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        synchronize(device)
        seconds.append(clock() - start)
        data_accuracy(data, "val", cfg.data.eval_batch_size)
        synchronize(device)
        whole.append(clock() - start)
    return seconds, whole, data_accuracy(data, "test", cfg.data.eval_batch_size), len(data.splits["train"][1])


def benchmark(cases: Sequence[str], batch_sizes: Sequence[int], epochs: int, repeats: int,
              extra: Sequence[str]) -> list[dict]:
    """Run every case at every batch size, visionlab and plain alternating `repeats` times."""
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            for batch_size in batch_sizes:
                overrides = [*CASES[case], f"data.batch_size={batch_size}", f"trainer.max_epochs={epochs}",
                             "data.val_size=1000", "callbacks.early_stopping.patience=1000", *extra]
                cfg = compose(overrides, tmp)
                device = training_device(cfg)
                gflops = matmul_gflops(device, autocast_dtype(cfg.trainer.get("precision")) or torch.float32)
                ours, floor, plain = (Result(case, batch_size, path) for path in PATHS)
                for _ in range(repeats):
                    seconds, whole, ours.test_acc, net = run_visionlab(cfg)
                    ours.add(seconds, whole)
                    seconds, whole, floor.test_acc = run_lightning(cfg, epochs)
                    floor.add(seconds, whole)
                    seconds, whole, plain.test_acc, n_train = run_plain(cfg, epochs)
                    plain.add(seconds, whole)
                shape = tuple(cast(Sequence[int], net.input_shape))  # every visionlab net records it
                sample = torch.randn(batch_size, *shape, device=next(net.parameters()).device)
                labels = torch.zeros(batch_size, dtype=torch.long, device=sample.device)
                epoch_flops = train_flops(net, sample, labels) / batch_size * n_train
                for result in (ours, floor, plain):
                    rows.append({
                        **asdict(result),
                        "median_epoch_s": result.median,
                        "median_whole_epoch_s": result.median_whole,
                        "samples_per_s": n_train / result.median,
                        "ratio_vs_plain": result.median / plain.median,
                        "whole_ratio_vs_plain": result.median_whole / plain.median_whole,
                        "share_of_matmul_limit": epoch_flops / result.median / (gflops * 1e9),
                        "matmul_gflops": gflops,
                        "device": device_name(device),
                        "overrides": overrides,
                    })
    return rows


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name with the threads torch uses."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (host: {cpu_model()})"
    return f"{cpu_model()} CPU, {torch.get_num_threads()} torch threads"


def cpu_model() -> str:
    """The CPU's model name as lscpu shows it (/proc/cpuinfo), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def markdown(rows: list[dict], command: str) -> str:
    """The results as a Markdown section: command, machine, one row per case and path."""
    machine = f"{platform.node()}: {rows[0]['device']}, torch {torch.__version__}, " \
              f"matmul {rows[0]['matmul_gflops']:.0f} GFLOP/s" if rows else ""
    lines = [f"Command: `{command}`", "", f"Machine: {machine}", "",
             "| case | batch | path | training s/epoch (min-max) | vs plain | whole s/epoch (min-max) | vs plain "
             "| samples/s | share of matmul limit | test acc |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['batch_size']} | {r['path']} | {r['median_epoch_s']:.2f} "
                     f"({spread(r['epoch_seconds'])}) | {r['ratio_vs_plain']:.2f} | {r['median_whole_epoch_s']:.2f} "
                     f"({spread(r['whole_epoch_seconds'])}) | {r['whole_ratio_vs_plain']:.2f} | "
                     f"{r['samples_per_s']:.0f} | {r['share_of_matmul_limit']:.1%} | {r['test_acc']:.4f} |")
    return "\n".join(lines) + "\n"


def spread(values: Sequence[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def main(argv: Sequence[str] | None = None) -> None:
    quiet_known_noise()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 256])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (the first includes warm-up)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each path")
    parser.add_argument("--channels-last", action="store_true", help="channels_last=true on both paths")
    parser.add_argument("--compile", action="store_true", help="torch.compile the net on both paths")
    parser.add_argument("--precision", default=None, choices=("32-true", "bf16-mixed", "16-mixed"),
                        help="Lightning precision on both paths (autocast in the plain loop)")
    parser.add_argument("--clock", default="wall", choices=list(CLOCKS),
                        help="epoch seconds by wall clock, or by this process's CPU time (steadier under load)")
    parser.add_argument("--json", type=Path, default=Path("outputs/benchmark.json"))
    parser.add_argument("--markdown", type=Path, default=None, help="append the table to this file")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. data=synthetic")
    args = parser.parse_args(argv)
    global clock
    clock = CLOCKS[args.clock]
    extra = list(args.overrides)
    extra += ["channels_last=true"] if args.channels_last else []
    extra += ["compile=true"] if args.compile else []
    if args.precision:
        extra.append(f"trainer.precision={args.precision}")
    rows = benchmark(args.cases, args.batch_sizes, args.epochs, args.repeats, extra)
    command = "python scripts/benchmark.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    atomic_write(args.json, json.dumps({"command": command, "rows": rows}, indent=2))
    table = markdown(rows, command.strip())
    print(table)
    if args.markdown:
        previous = args.markdown.read_text() if args.markdown.exists() else ""
        atomic_write(args.markdown, previous + "\n" + table)
