"""Time to accuracy: run a training recipe for several seeds, time each fit apart from its
start-up and test, and turn the results into the leaderboard table (docs/benchmarks/leaderboard.md).

    python scripts/speedrun.py run speedrun_cpu --seeds 3 --target 0.93 [trainer.max_epochs=8 ...]
    python scripts/speedrun.py table docs/benchmarks/speedrun/*.json --out docs/benchmarks/leaderboard.md

Each seed trains in this process through the train entry point (`visionlab.entrypoints.train`)
with a `FitClock` callback added: training seconds run from Lightning's `on_train_start` to
its `on_train_end` (validation included, the GPU synchronised at both ends); start-up (config,
data read, net built, sanity check) and what follows (test, files) are counted apart. Time
to a target accuracy is read from the run's history.csv: the summed `epoch_seconds` up to the
first epoch whose validation accuracy reaches it.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

DEFAULT_OUT = Path("outputs") / "speedrun"
LEADERBOARD_HEADER = (
    "| recipe | hardware | seeds | test accuracy (mean ± spread) | min | training s (mean) | "
    "to target (val) | command | date |\n|---|---|---|---|---|---|---|---|---|"
)


def hardware() -> str:
    """The device a run trains on: the GPU's name, else the CPU model, cores and torch threads."""
    if torch.cuda.is_available():
        return f"1x {torch.cuda.get_device_name(0)}"
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        model = names[0] if names else model
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def time_to_accuracy(history: Path, target: float) -> float | None:
    """Training seconds until the first epoch whose val_acc reaches `target` (the summed
    epoch_seconds of history.csv up to that epoch), None when no epoch reaches it."""
    elapsed = 0.0
    with history.open(newline="") as f:
        for row in csv.DictReader(f):
            elapsed += float(row["epoch_seconds"])
            acc = float(row["val_acc"] or "nan")
            if acc >= target:
                return elapsed
    return None


def run_seed(recipe: str, seed: int, overrides: Sequence[str], folder: Path, target: float) -> dict[str, Any]:
    """Train `recipe` (an experiment name, or `default`) once with `seed`; its row."""
    from omegaconf import OmegaConf

    from visionlab.app.assemble import CHECKS
    from visionlab.app.config import compose_config, validate
    from visionlab.app.fit import train

    started_wall = time.time()
    args = [
        *([] if recipe == "default" else [f"experiment={recipe}"]),
        f"seed={seed}",
        *overrides,
        "+callbacks.fit_clock._target_=visionlab.training.timing.FitClock",
        f"+callbacks.fit_clock.dirpath={folder}",
    ]
    cfg = compose_config(args, output_dir=folder)
    validate(cfg, CHECKS)
    (folder / ".hydra").mkdir(parents=True, exist_ok=True)  # as a Hydra run leaves it: evaluate.py finds the data
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    metrics = train(cfg)
    ended_wall = time.time()
    clock = json.loads((folder / "fit_clock.json").read_text())
    history = folder / "history.csv"
    return {
        "seed": seed,
        "test_acc": metrics.get("test/acc"),
        "val_acc": metrics.get("val/acc"),
        "train_seconds": clock["train_seconds"],
        "startup_seconds": clock["train_start"] - started_wall,
        "after_fit_seconds": ended_wall - clock["train_end"],
        "epochs": clock["epochs"],
        "time_to_target": time_to_accuracy(history, target) if history.is_file() else None,
        "run_dir": str(folder),
    }


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Test accuracy mean, min and spread (max - min) and mean training seconds over seeds."""
    accs = [r["test_acc"] for r in rows if r["test_acc"] is not None]
    reached = [r["time_to_target"] for r in rows if r["time_to_target"] is not None]
    return {
        "test_acc_mean": statistics.fmean(accs) if accs else None,
        "test_acc_min": min(accs) if accs else None,
        "test_acc_spread": max(accs) - min(accs) if accs else None,
        "train_seconds_mean": statistics.fmean(r["train_seconds"] for r in rows) if rows else None,
        "time_to_target_mean": statistics.fmean(reached) if len(reached) == len(rows) and rows else None,
        "seeds_reaching_target": len(reached),
    }


def run(
    recipe: str, seeds: Sequence[int], target: float, overrides: Sequence[str], out: Path, command: str | None = None
) -> dict[str, Any]:
    """Every seed of `recipe`, then the JSON result written to `out/<recipe>-<time>.json`."""
    stamp = datetime.datetime.now(datetime.timezone.utc)
    base = out / f"{recipe}-{stamp:%Y%m%d-%H%M%S}"
    rows = [run_seed(recipe, seed, overrides, base / f"seed{seed}", target) for seed in seeds]
    result = {
        "recipe": recipe,
        "overrides": list(overrides),
        "target": target,
        "hardware": hardware(),
        "command": command or " ".join(["python scripts/speedrun.py run", recipe, *map(shlex.quote, overrides)]),
        "date": stamp.strftime("%Y-%m-%d"),
        "runs": rows,
        "summary": summarize(rows),
    }
    base.mkdir(parents=True, exist_ok=True)
    path = base.with_suffix(".json")
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {path}")
    return result


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def table_row(result: dict[str, Any]) -> str:
    """One leaderboard line of a `run` result."""
    s = result["summary"]
    acc = "-" if s["test_acc_mean"] is None else f"{s['test_acc_mean']:.4f} ± {s['test_acc_spread']:.4f}"
    reach = f"{_fmt(s['time_to_target_mean'], '.1f', ' s')} to {result['target']:.2f}"
    if s["time_to_target_mean"] is None:
        reach = f"{s['seeds_reaching_target']}/{len(result['runs'])} seeds reach {result['target']:.2f}"
    return (
        f"| {result['recipe']} | {result['hardware']} | {len(result['runs'])} | {acc} | "
        f"{_fmt(s['test_acc_min'], '.4f')} | {_fmt(s['train_seconds_mean'], '.1f')} | {reach} | "
        f"`{result['command']}` | {result['date']} |"
    )


def leaderboard(results: Sequence[dict[str, Any]]) -> str:
    """The markdown table of `results`, best mean test accuracy first."""
    ordered = sorted(results, key=lambda r: -(r["summary"]["test_acc_mean"] or 0.0))
    return "\n".join([LEADERBOARD_HEADER, *map(table_row, ordered)]) + "\n"


def write_table(paths: Sequence[Path], out: Path | None) -> str:
    """The leaderboard of the result files `paths`, replacing the table in `out` (the text
    from the first line starting with `| recipe |` to the end), or printed."""
    table = leaderboard([json.loads(p.read_text()) for p in paths])
    if out is None:
        print(table, end="")
        return table
    text = out.read_text() if out.is_file() else "# Leaderboard\n\n"
    head = text.split("| recipe |", 1)[0]
    out.write_text(head + table)
    print(f"wrote {out} ({len(paths)} recipes)")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/speedrun.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run", help="train a recipe for several seeds and write its JSON result")
    go.add_argument("recipe", help="an experiment name (conf/experiment/NAME.yaml), or `default` for make train's")
    go.add_argument("--seeds", type=int, default=3, help="how many seeds (0, 1, ...)")
    go.add_argument("--target", type=float, default=0.93, help="the accuracy whose time is reported")
    go.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder of the runs and the JSON result")
    go.epilog = "Anything else on the line is a config override for every seed (trainer.max_epochs=8)."
    tab = sub.add_parser("table", help="write the leaderboard of result JSON files")
    tab.add_argument("results", nargs="+", type=Path)
    tab.add_argument("--out", type=Path, default=None, help="the markdown file whose table is replaced")
    args, overrides = parser.parse_known_args(argv)
    overrides = [o for o in overrides if o != "--"]
    if overrides and args.command != "run" or any(o.startswith("-") for o in overrides):
        parser.error(f"unrecognized arguments: {' '.join(overrides)}")
    if args.command == "run":
        from hydra.errors import HydraException

        from visionlab.app.config import CONF_DIR
        from visionlab.utils.errors import ConfigError

        recipes = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
        if args.recipe not in ("default", *recipes):
            parser.error(
                f"recipe {args.recipe!r} is not an experiment; expected default or one of {', '.join(recipes)}"
            )
        if args.seeds < 1 or not 0 < args.target <= 1:
            parser.error(f"--seeds={args.seeds} --target={args.target}: expected seeds >= 1 and 0 < target <= 1")
        command = " ".join(["python scripts/speedrun.py", *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
        try:
            run(args.recipe, range(args.seeds), args.target, overrides, args.out, command)
        except (ConfigError, HydraException) as err:  # bad overrides: one line, as the commands say it
            print(f"error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
            return 2
    else:
        write_table(args.results, args.out)
    return 0
