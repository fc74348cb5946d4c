"""Multiruns: a failing job is recorded and the others go on under the basic sweeper; every
multirun ends in a report; the report reads any folder of runs. (Optuna: test_search.py.)"""

import csv
import subprocess
import sys

import pytest

from conftest import REPO
from visionlab.entrypoints.report import main as report_main
from visionlab.entrypoints.report import short_override

TINY = (
    "data=synthetic",
    "model=mlp",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=2",
    "trainer.num_sanity_val_steps=0",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
    "logger=csv",
    "data.train_size=128",
    "data.test_size=32",
)


def run_script(script, *args, cwd):
    run = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300, cwd=cwd)
    return run


def read_report(folder):
    with (folder / "report.csv").open() as f:
        return {row["run"]: row for row in csv.DictReader(f)}


@pytest.mark.slow
def test_multirun_with_a_failed_job_ends_in_a_report(tmp_path):
    sweep = tmp_path / "sweep"
    run = run_script(
        REPO / "scripts" / "train.py",
        "-m",
        *TINY,
        "model.hidden=[16]",
        "model.activation=relu,swish,elu",
        f"hydra.sweep.dir={sweep}",
        f"paths.log_dir={tmp_path}",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "error: model.activation='swish' is not allowed" in (sweep / "1" / "error.txt").read_text()
    rows = read_report(sweep)  # written by the MultirunReport callback at the end of the sweep
    assert rows.keys() == {"0", "1", "2"}
    assert [rows[r]["status"] for r in ("0", "1", "2")] == ["ok", "failed", "ok"]
    assert rows["1"]["best_val_acc"] == "" and "swish" in rows["1"]["error"]
    assert rows["0"]["overrides"] == "model.activation=relu"
    for r in ("0", "2"):
        assert 0 <= float(rows[r]["best_val_acc"]) <= 1 and rows[r]["epochs"] == "2"
        assert 1 <= int(rows[r]["epochs_to_best"]) <= 2 and float(rows[r]["seconds"]) > 0
    order = list(rows)
    assert order[-1] == "1"  # failed runs last
    assert float(rows[order[0]]["best_val_acc"]) >= float(rows[order[1]]["best_val_acc"])
    markdown = (sweep / "report.md").read_text()
    assert "Overrides shared by all runs" in markdown and "- `1` (failed): error: model.activation=" in markdown
    assert (sweep / "curves.png").read_bytes().startswith(b"\x89PNG")

    # the command-line report over the parent folder finds the same runs, sorted by loss
    (sweep / "report.csv").unlink()
    report_main([str(tmp_path), "--sort", "best_val_loss"])
    rows = read_report(tmp_path)
    assert set(rows) == {"sweep/0", "sweep/1", "sweep/2"}
    losses = [float(r["best_val_loss"]) for r in rows.values() if r["status"] == "ok"]
    assert losses == sorted(losses)


def test_report_of_a_folder_without_runs_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        report_main([str(tmp_path)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path} holds no runs (no folder with .hydra/config.yaml)"


def test_long_search_values_are_shortened_in_labels():
    assert short_override("optimizer.lr=0.0013292918943162175") == "optimizer.lr=0.001329"
    assert short_override("model.channels=[16,32]") == "model.channels=[16,32]"
    assert short_override("optimizer.lr=0.01") == "optimizer.lr=0.01"
