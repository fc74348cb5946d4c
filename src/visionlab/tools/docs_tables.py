"""The README's table of figures, generated from results files so that no figure is typed.

    python scripts/docs_tables.py                 # rewrite README.md's figures block
    python scripts/docs_tables.py --check         # exit 1 when the block is not what the files say
    python scripts/docs_tables.py measure train   # run `make train`, record its time and test accuracy
    python scripts/docs_tables.py measure test    # run `make test`, record its time and counts

The block between `<!-- figures:start -->` and `<!-- figures:end -->` holds one row for
`make train` and `make test` (from docs/benchmarks/make.json, which `measure` writes) and one
for the `speedrun_cpu` recipe (the newest of docs/benchmarks/speedrun/speedrun_cpu-*.json,
the leaderboard's source, written by scripts/speedrun.py). Every row carries its date and
hardware as the results file records them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
README = REPO / "README.md"
MAKE_RESULTS = REPO / "docs" / "benchmarks" / "make.json"
SPEEDRUN_DIR = REPO / "docs" / "benchmarks" / "speedrun"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"
HEADER = "| command | result | time | measured on |\n|---|---|---|---|"
PYTEST_SUMMARY = re.compile(r"(\d+) passed(?:, (\d+) skipped)?.* in ([\d.]+)s")


def duration(seconds: float) -> str:
    """`3 min 0 s` for 180.4: how the README states a wall time."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def speedrun_result(folder: Path, recipe: str = "speedrun_cpu") -> dict[str, Any]:
    """The newest result of `recipe` in `folder` (file names end in their date)."""
    paths = sorted(folder.glob(f"{recipe}-*.json"))
    if not paths:
        raise FileNotFoundError(f"no {recipe}-*.json in {folder}: run scripts/speedrun.py run {recipe}")
    return json.loads(paths[-1].read_text())


def rows(make: dict[str, Any], speedrun: dict[str, Any]) -> list[str]:
    """The table's lines: make train, make test, then the speedrun recipe."""
    train, test, s = make["make_train"], make["make_test"], speedrun["summary"]
    counts = f"{test['passed']} passed" + (f", {test['skipped']} skipped" if test.get("skipped") else "")
    return [
        HEADER,
        f"| `make train` (default CNN, 4 epochs) | test accuracy {train['test_acc']:.4f} | "
        f"{duration(train['seconds'])} in all | {train['date']}, {train['hardware']} |",
        f"| `make test` | {counts} | {duration(test['seconds'])} of tests | {test['date']}, {test['hardware']} |",
        f"| `{speedrun['command'].replace('python scripts/speedrun.py run ', 'speedrun.py run ')}` "
        f"| test accuracy {s['test_acc_mean']:.4f} mean, {s['test_acc_min']:.4f} min | "
        f"{s['train_seconds_mean']:.0f} s of training per seed | {speedrun['date']}, {speedrun['hardware']} |",
    ]


def figures_block(make_results: Path = MAKE_RESULTS, speedrun_dir: Path = SPEEDRUN_DIR) -> str:
    """The text that belongs between the README's markers."""
    return "\n".join(rows(json.loads(make_results.read_text()), speedrun_result(speedrun_dir))) + "\n"


def replace_block(text: str, block: str) -> str:
    """`text` with what lies between the markers replaced by `block`."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"README.md needs one {START} line before one {END} line")
    head, rest = text.split(START, 1)
    return f"{head}{START}\n{block}{END}{rest.split(END, 1)[1]}"


def measure(which: str, results: Path = MAKE_RESULTS) -> dict[str, Any]:
    """Run `make train` or `make test` from the repository root and record its figures in
    `results` (the file's other entry is kept): make train's wall time and the test accuracy
    of the run it made; make test's counts and pytest's own time (the install apart)."""
    from visionlab.tools.speedrun import hardware

    started = time.time()
    proc = subprocess.run(["make", which], cwd=REPO, capture_output=True, text=True)
    seconds = time.time() - started
    sys.stdout.write(proc.stdout[-2000:])
    if proc.returncode != 0:
        raise SystemExit(f"make {which} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    entry: dict[str, Any] = {
        "command": f"make {which}",
        "date": datetime.date.today().isoformat(),
        "hardware": hardware(),
        "seconds": round(seconds, 1),
    }
    if which == "train":
        newest = max((REPO / "outputs" / "runs").glob("*/*/metrics.json"), key=lambda p: p.stat().st_mtime)
        entry["test_acc"] = round(json.loads(newest.read_text())["test/acc"], 4)
    else:
        found = PYTEST_SUMMARY.search(proc.stdout)
        if found is None:
            raise SystemExit("make test printed no pytest summary line")
        entry.update(seconds=float(found[3]), passed=int(found[1]), skipped=int(found[2] or 0))
    recorded = json.loads(results.read_text()) if results.is_file() else {}
    recorded[f"make_{which}"] = entry
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(recorded, indent=2) + "\n")
    print(f"wrote {results}: {entry}")
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/docs_tables.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when README.md's block is out of date")
    sub = parser.add_subparsers(dest="command")
    go = sub.add_parser("measure", help="run make train or make test and record its figures")
    go.add_argument("which", choices=["train", "test"])
    args = parser.parse_args(argv)
    if args.command == "measure":
        measure(args.which)
    text = README.read_text()
    updated = replace_block(text, figures_block())
    if args.check:
        if updated != text:
            print("README.md's figures block is out of date: run python scripts/docs_tables.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(updated)
    print(f"wrote {README.relative_to(REPO)}'s figures block")
    return 0
