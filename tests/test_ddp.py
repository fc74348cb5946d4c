"""Two processes on this CPU (gloo): same updates as one process with the same global
batch, metrics synced across ranks, and one run folder written by rank 0 only."""

import csv
import json
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

COMMON = [
    "data=synthetic",
    "data.train_size=2048",
    "data.val_size=512",
    "data.noise=3.0",
    "model=mlp",
    "trainer.max_epochs=1",
    "callbacks.progress_bar.refresh_rate=0",
    "logger=csv",
    "test=false",
]


def train(tmp_path, name, *args):
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "train.py"),
            *COMMON,
            *args,
            f"paths.log_dir={tmp_path}",
            f"hydra.run.dir={tmp_path}/{name}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads((tmp_path / name / "metrics.json").read_text())


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One process of the global batch: the reference of both strategies."""
    return train(tmp_path_factory.mktemp("single"), "single", "data.batch_size=32")


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_two_cpu_processes_match_one_process_with_the_same_global_batch(strategy, single, tmp_path):
    ddp = train(
        tmp_path,
        "ddp",
        "trainer=ddp",
        f"trainer.strategy={strategy}",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "data.batch_size=16",
    )
    assert abs(single["val/acc"] - ddp["val/acc"]) <= 0.01
    assert abs(single["train/loss"] - ddp["train/loss"]) <= 0.01
    assert ddp["train/acc"] > 0
    assert [p.name for p in (tmp_path / "ddp" / "checkpoints").glob("last*.ckpt")] == ["last.ckpt"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["ddp"]
    with open(tmp_path / "ddp" / "csv" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sum(1 for r in rows if r["train/loss"]) == 1, "the epoch's metrics are written once (by rank 0)"
