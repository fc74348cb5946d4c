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
import json
import platform
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import torch
from omegaconf import DictConfig, open_dict

from visionlab.app.assemble import CHECKS
from visionlab.app.config import compose_config, validate
from visionlab.tools.benchmark_clock import CLOCKS, device_name, matmul_gflops, train_flops, use_clock
from visionlab.tools.benchmark_data import autocast_dtype, training_device
from visionlab.tools.benchmark_paths import run_lightning, run_plain, run_visionlab
from visionlab.utils.io import atomic_write
from visionlab.utils.quiet import quiet_known_noise

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


def compose(overrides: Sequence[str], output_dir: str) -> DictConfig:
    """The config scripts/train.py would use for `overrides`, checked, writing under `output_dir`."""
    cfg = compose_config(overrides, output_dir)
    validate(cfg, CHECKS)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


def benchmark(
    cases: Sequence[str], batch_sizes: Sequence[int], epochs: int, repeats: int, extra: Sequence[str]
) -> list[dict]:
    """Run every case at every batch size, visionlab and plain alternating `repeats` times."""
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            for batch_size in batch_sizes:
                overrides = [
                    *CASES[case],
                    f"data.batch_size={batch_size}",
                    f"trainer.max_epochs={epochs}",
                    "data.val_size=1000",
                    "callbacks.early_stopping.patience=1000",
                    *extra,
                ]
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
                    rows.append(
                        {
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
                        }
                    )
    return rows


def markdown(rows: list[dict], command: str) -> str:
    """The results as a Markdown section: command, machine, one row per case and path."""
    machine = (
        f"{platform.node()}: {rows[0]['device']}, torch {torch.__version__}, "
        f"matmul {rows[0]['matmul_gflops']:.0f} GFLOP/s"
        if rows
        else ""
    )
    lines = [
        f"Command: `{command}`",
        "",
        f"Machine: {machine}",
        "",
        "| case | batch | path | training s/epoch (min-max) | vs plain | whole s/epoch (min-max) | vs plain "
        "| samples/s | share of matmul limit | test acc |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['batch_size']} | {r['path']} | {r['median_epoch_s']:.2f} "
            f"({spread(r['epoch_seconds'])}) | {r['ratio_vs_plain']:.2f} | {r['median_whole_epoch_s']:.2f} "
            f"({spread(r['whole_epoch_seconds'])}) | {r['whole_ratio_vs_plain']:.2f} | "
            f"{r['samples_per_s']:.0f} | {r['share_of_matmul_limit']:.1%} | {r['test_acc']:.4f} |"
        )
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
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels_last=true (or false) on both paths; default: the config's (true)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the net on both paths")
    parser.add_argument(
        "--precision",
        default=None,
        choices=("32-true", "bf16-mixed", "16-mixed"),
        help="Lightning precision on both paths (autocast in the plain loop)",
    )
    parser.add_argument(
        "--clock",
        default="wall",
        choices=list(CLOCKS),
        help="epoch seconds by wall clock, or by this process's CPU time (steadier under load)",
    )
    parser.add_argument("--json", type=Path, default=Path("outputs/benchmark.json"))
    parser.add_argument("--markdown", type=Path, default=None, help="append the table to this file")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. data=synthetic")
    args = parser.parse_args(argv)
    use_clock(args.clock)
    extra = list(args.overrides)
    extra += [] if args.channels_last is None else [f"channels_last={str(args.channels_last).lower()}"]
    extra += ["compile=true"] if args.compile else []
    if args.precision:
        extra.append(f"trainer.precision={args.precision}")
    rows = benchmark(args.cases, args.batch_sizes, args.epochs, args.repeats, extra)
    command = "python scripts/benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:])
    atomic_write(args.json, json.dumps({"command": command, "rows": rows}, indent=2))
    table = markdown(rows, command.strip())
    print(table)
    if args.markdown:
        previous = args.markdown.read_text() if args.markdown.exists() else ""
        atomic_write(args.markdown, previous + "\n" + table)
