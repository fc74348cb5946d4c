"""The benchmark's clocks and ceilings: epoch timing (wall or CPU clock, GPU work waited
for), the device's measured matmul throughput and a model's FLOPs per step, the machine's name."""

from __future__ import annotations

import functools
import platform
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# Epoch clocks: wall time, or this process's CPU time, steadier on a shared machine (with
# OMP_NUM_THREADS=1; more threads add their spin-waits). Set by --clock.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = CLOCKS["wall"]


def use_clock(name: str) -> None:
    """--clock: which clock `now` reads."""
    global _clock
    _clock = CLOCKS[name]


def now() -> float:
    """The epoch clock's reading, in seconds."""
    return _clock()


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
        return now() - self._start

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if len(self.whole) < len(self.seconds):
            self.whole.append(self._lap(pl_module))
        synchronize(pl_module.device)
        self._start = now()

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


@functools.cache
def matmul_gflops(
    device: torch.device, dtype: torch.dtype = torch.float32, budget_s: float = 0.5, max_size: int = 4096
) -> float:
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
