"""Compare runs: `python scripts/report.py outputs/multirun/DATE/TIME` (or any folder holding
runs) writes report.md, report.csv and curves.png into that folder.

A run is a folder with `.hydra/config.yaml`; its overrides, per-epoch metrics
(csv/metrics.csv), final metrics (metrics.json) and error.txt (written by a failed run)
make one row. Runs that failed or have no metrics stay in the table, marked as such.
After every multirun, `MultirunReport` (a Hydra callback in conf/hydra/default.yaml)
writes the same report into the sweep folder.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from omegaconf import DictConfig

from visionlab.app.cli import ERROR_FILE
from visionlab.utils.errors import ConfigError
from visionlab.utils.io import atomic_path, atomic_write

log = logging.getLogger("visionlab")

COLUMNS = (
    "run",
    "status",
    "overrides",
    "best_val_acc",
    "best_val_loss",
    "test_acc",
    "epochs_to_best",
    "epochs",
    "seconds",
    "error",
)
FINAL_KEYS = ("val/acc", "val/loss", "test/acc")  # what the report reads of metrics.json
# sortable columns and whether larger is better
SORT_KEYS = {"best_val_acc": True, "best_val_loss": False, "test_acc": True, "epochs_to_best": False, "seconds": False}


@dataclass
class Run:
    """One run's row of the report, and its validation-accuracy curve."""

    name: str
    status: str  # ok | failed | incomplete (stopped before metrics.json) | no metrics | unreadable
    overrides: list[str]
    label: str = ""  # the overrides that differ between the compared runs
    curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, val/acc)
    best_val_acc: float | None = None
    best_val_loss: float | None = None
    test_acc: float | None = None
    epochs_to_best: int | None = None
    epochs: int | None = None
    seconds: float | None = None
    error: str = ""

    def row(self) -> dict[str, Any]:
        values = {c: getattr(self, c, None) for c in COLUMNS}
        values["run"], values["overrides"] = self.name, self.label
        return values


def find_runs(root: Path) -> list[Path]:
    """Every run folder under `root` (or `root` itself), job numbers in numeric order."""
    dirs = {p.parent.parent for p in root.rglob("config.yaml") if p.parent.name == ".hydra"}
    return sorted(dirs, key=lambda d: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(d))])


def read_epochs(path: Path) -> dict[int, dict[str, float]]:
    """Lightning's metrics.csv merged to one dict of metrics per epoch."""
    epochs: dict[int, dict[str, float]] = {}
    if not path.is_file():
        return epochs
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("epoch"):
                continue
            values = epochs.setdefault(int(float(row["epoch"])), {})
            values.update({k: float(v) for k, v in row.items() if v not in ("", None) and k != "epoch"})
    return epochs


def read_run(path: Path, root: Path) -> Run:
    """One run folder as a report row."""
    overrides_file = path / ".hydra" / "overrides.yaml"
    metrics_file, error_file = path / "metrics.json", path / ERROR_FILE
    name = str(path.relative_to(root))
    try:
        # read as text: OmegaConf would resolve ${oc.env:...} in a line someone put there
        listed = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
        overrides = [str(o) for o in listed] if isinstance(listed, list) else []
        final = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        if not isinstance(final, dict):
            raise ValueError("not a JSON object")
        for key in FINAL_KEYS:
            if key in final and not _is_number(final[key]):
                raise ValueError(f"metrics.json: {key}={final[key]!r} is not a number")
        epochs = read_epochs(path / "csv" / "metrics.csv")
    except (OSError, ValueError, TypeError, yaml.YAMLError) as err:  # one bad run must not end the report
        reason = f"unreadable files ({' '.join(str(err).split())[:160]})"
        log.warning("report: %s: %s", path, reason)
        return Run(name=name, status="unreadable", overrides=[], error=reason)
    val = [(e, m) for e, m in sorted(epochs.items()) if math.isfinite(m.get("val/acc", math.nan))]
    if error_file.is_file():
        status = "failed"
    elif final:
        status = "ok"
    else:
        status = "incomplete" if epochs else "no metrics"
    run = Run(
        name=name,
        status=status,
        overrides=overrides,
        error=error_file.read_text().strip() if error_file.is_file() else "",
    )
    run.curve = [(e, m["val/acc"]) for e, m in val]
    if val:
        best_epoch, best = max(val, key=lambda em: em[1]["val/acc"])
        run.best_val_acc, run.epochs_to_best = best["val/acc"], best_epoch + 1
        losses = [m["val/loss"] for _, m in val if math.isfinite(m.get("val/loss", math.nan))]
        run.best_val_loss = min(losses) if losses else None
    elif "val/acc" in final:
        run.best_val_acc, run.best_val_loss = final["val/acc"], final.get("val/loss")
    run.test_acc = final.get("test/acc")
    run.epochs = sum("train/loss" in m for m in epochs.values()) or None
    times = [m["time/epoch_s"] for m in epochs.values() if "time/epoch_s" in m]
    if times:
        run.seconds = sum(times)
    elif metrics_file.is_file():  # runs logged before epoch times: the job's wall time
        run.seconds = metrics_file.stat().st_mtime - (path / ".hydra" / "config.yaml").stat().st_mtime
    return run


def short_override(override: str) -> str:
    """`optimizer.lr=0.0013292918943162175` -> `optimizer.lr=0.001329` (search trials' values)."""
    key, sep, value = override.partition("=")
    if sep and re.fullmatch(r"-?\d+\.\d{5,}(e-?\d+)?", value):
        return f"{key}={float(value):.4g}"
    return override


def label_runs(runs: list[Run]) -> list[str]:
    """Set each run's label to its overrides not shared by all runs; return the shared ones."""
    shared = set.intersection(*(set(r.overrides) for r in runs)) if len(runs) > 1 else set()
    for run in runs:
        run.label = " ".join(short_override(o) for o in run.overrides if o not in shared) or run.name
    return [o for o in runs[0].overrides if o in shared] if runs else []


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _ranked(run: Run, key: str) -> bool:
    """Whether `run` takes part in the ranking: finished, with a finite value of `key`."""
    value = getattr(run, key)
    return run.status == "ok" and value is not None and math.isfinite(value)


def sort_runs(runs: list[Run], key: str) -> list[Run]:
    """Best first by `key` among finished runs; the others (failed, stopped early, without
    metrics, or with a NaN value) last, in folder order, whatever their partial metrics."""
    scored = sorted((r for r in runs if _ranked(r, key)), key=lambda r: getattr(r, key), reverse=SORT_KEYS[key])
    return scored + [r for r in runs if not _ranked(r, key)]


def _fmt(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.1f}" if column == "seconds" else f"{value:.4f}"
    return str(value)


def to_csv(runs: list[Run]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for run in runs:
        writer.writerow({k: "" if v is None else v for k, v in run.row().items()})
    return out.getvalue()


def to_markdown(runs: list[Run], root: Path, shared: list[str], key: str) -> str:
    ok = sum(r.status == "ok" for r in runs)
    lines = [
        f"# Report: {root}",
        "",
        f"{len(runs)} runs, {ok} finished; sorted by {key} ({'higher' if SORT_KEYS[key] else 'lower'} is better).",
        "",
    ]
    if shared:
        lines += ["Overrides shared by all runs: `" + " ".join(shared) + "`", ""]
    header = [c for c in COLUMNS if c != "error"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        row = run.row()
        cells = [f"`{row[c]}`" if c == "overrides" and row[c] else _fmt(c, row[c]) for c in header]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in runs if r.status != "ok"]
    if failed:
        lines += ["", "## Not finished", ""]
        lines += [f"- `{r.name}` ({r.status}){': ' + r.error if r.error else ''}" for r in failed]
    lines += ["", "![validation accuracy per epoch](curves.png)", ""]
    return "\n".join(lines)


def plot_curves(runs: list[Run], target: Path) -> None:
    """Validation accuracy per epoch of every run on one plot, labelled by overrides."""
    plotted = [r for r in runs if r.curve]
    fig = Figure(figsize=(9, 4.5 + 0.2 * len(plotted)), dpi=100)
    ax = fig.subplots()
    for run in plotted:
        epochs, accs = zip(*run.curve)
        ax.plot(epochs, accs, marker="o", markersize=3, label=run.label)
    ax.set_xlabel("epoch (from 0)")
    ax.set_ylabel("val accuracy")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if plotted:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png")


def write_report(root: str | Path, key: str = "best_val_acc") -> list[Run]:
    """Write report.md, report.csv and curves.png into `root`; return the sorted runs."""
    root = Path(root)
    if key not in SORT_KEYS:
        raise ConfigError(f"sort key {key!r} is unknown; allowed: {', '.join(SORT_KEYS)}")
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    dirs = find_runs(root)
    if not dirs:
        raise FileNotFoundError(f"{root} holds no runs (no folder with .hydra/config.yaml)")
    runs = [read_run(d, root) for d in dirs]
    shared = label_runs(runs)
    runs = sort_runs(runs, key)
    atomic_write(root / "report.csv", to_csv(runs))
    atomic_write(root / "report.md", to_markdown(runs, root, shared, key))
    plot_curves(runs, root / "curves.png")
    return runs


class MultirunReport(Callback):
    """Hydra callback: after a multirun, the report of its jobs in the sweep folder."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(config.hydra.sweep.dir)
        try:
            runs = write_report(root)
        except Exception as err:  # a report problem must not turn a finished sweep into a failure
            log.warning("report: could not write a report for %s (%s: %s)", root, type(err).__name__, err)
            return
        failed = [r.name for r in runs if r.status != "ok"]
        log.info(
            "report: %s (%d runs%s)",
            root / "report.md",
            len(runs),
            f"; not finished: {', '.join(failed)}" if failed else "",
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Compare the runs in a folder: report.md, report.csv, curves.png.")
    parser.add_argument("folder", help="a multirun folder (outputs/multirun/DATE/TIME) or any folder of runs")
    parser.add_argument("--sort", default="best_val_acc", choices=sorted(SORT_KEYS), help="column to rank runs by")
    args = parser.parse_args(argv)
    try:
        runs = write_report(args.folder, args.sort)
    except (FileNotFoundError, ConfigError) as err:  # any other ValueError is a bug: its traceback shows
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"{len(runs)} runs -> {Path(args.folder) / 'report.md'}, report.csv, curves.png")
    for run in runs[:5]:
        best = _fmt("best_val_acc", run.best_val_acc) or "-"
        print(f"  {best:>7}  {run.status:<10} {run.label}")
