"""A run folder is data, never code (issue 19): each attack or careless mistake is rebuilt
on tiny data and must end in one line naming the file or key, with no payload run and the
run folder unchanged."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import Payload, run_main, tree_hash
from visionlab.data.formats.idx import write_idx
from visionlab.entrypoints import evaluate, export, predict
from visionlab.entrypoints.train import main as train_main

BASE = [
    "model.channels=[4]",
    "model.dense=[8]",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "logger=csv",
    "callbacks.progress_bar.refresh_rate=0",
    "trainer.enable_model_summary=false",
]
TINY = ["data=synthetic", "data.train_size=96", "data.val_size=32", "data.test_size=32", "data.batch_size=16", *BASE]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run folder made by scripts/train.py's main (default CNN, one tiny epoch)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    code, err = run_main(train_main, [*TINY, f"hydra.run.dir={run}"])
    assert code == 0, err
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A private copy of the trained run folder, to tamper with."""
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def last_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    return lines[-1]


# --- 1. code from a run folder's config --------------------------------------------------
@pytest.mark.parametrize("entry", [evaluate, predict, export])
def test_targets_in_a_run_config_are_refused_before_anything_runs(entry, run, tmp_path):
    marker = tmp_path / "pwned"
    payload = tmp_path / "payload.ckpt"
    with open(payload, "wb") as f:
        pickle.dump(Payload(marker), f)
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    config["data"] = {"_target_": "torch.load", "f": str(payload), "weights_only": False}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    before = tree_hash(run)
    extra = {evaluate: [], predict: ["predict.from_test=2"], export: []}[entry]
    code, err = run_main(
        entry.main, [f"ckpt_path={run}/checkpoints/last.ckpt", *extra, f"hydra.run.dir={tmp_path / 'out'}"]
    )
    if entry is export:  # export needs no data: it must not build the tampered one either
        assert code == 0, err
    else:
        assert code == 2
        assert last_error(err) == (
            "error: data._target_='torch.load' is not allowed from a run folder or "
            "checkpoint; allowed: classes of visionlab, torch.optim, lightning.pytorch.callbacks,"
            " lightning.pytorch.loggers, lightning.Trainer, torchvision.transforms, "
            "torchvision.models"
        )
    assert not marker.exists()
    assert tree_hash(run) == before


def test_a_resume_does_not_replay_targets_from_the_run_folder(run, tmp_path):
    marker = tmp_path / "pwned"
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    overrides += [
        "callbacks.history._target_=shutil.copyfile",
        f"+callbacks.history.src={run}/train.log",
        f"+callbacks.history.dst={marker}",
    ]
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    before = tree_hash(run)
    code, err = run_main(train_main, [f"ckpt_path={run}/checkpoints/last.ckpt", "trainer.max_epochs=2"])
    assert code == 2
    assert "callbacks.history._target_='shutil.copyfile' is not allowed from a run folder" in last_error(err)
    assert not marker.exists() and tree_hash(run) == before


# --- 2. reading never writes ----------------------------------------------------------------
def test_eval_predict_export_write_only_into_their_own_folder(run, tmp_path):
    before = tree_hash(run)
    for i, (entry, extra) in enumerate([(evaluate, []), (predict, ["predict.from_test=3"]), (export, [])]):
        out = tmp_path / f"out{i}"
        code, err = run_main(entry.main, [f"ckpt_path={run}/checkpoints/last.ckpt", *extra, f"hydra.run.dir={out}"])
        assert code == 0, err
        assert any(out.iterdir())
    assert tree_hash(run) == before


# --- 3. resume is additive ------------------------------------------------------------------
def test_a_resume_that_changes_the_model_is_refused_and_leaves_the_run_as_it_was(run):
    before = tree_hash(run)
    code, err = run_main(train_main, [f"ckpt_path={run}/checkpoints/last.ckpt", "model=mlp"])
    assert code == 2
    assert last_error(err).startswith(
        f"error: ckpt_path={run}/checkpoints/last.ckpt: model=mlp would change what run {run} is ("
    )
    assert tree_hash(run) == before


def test_a_resume_of_another_architecture_is_refused_in_one_line(run, tmp_path):
    other = tmp_path / "mlp"
    mlp = [a for a in TINY if not a.startswith("model.")]
    code, err = run_main(train_main, [*mlp, "model=mlp", f"hydra.run.dir={other}"])
    assert code == 0, err
    shutil.copy(other / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt")
    before = tree_hash(run)
    code, err = run_main(train_main, [f"ckpt_path={run}/checkpoints/last.ckpt", "trainer.max_epochs=2"])
    assert code == 2
    assert "does not fit model visionlab.models.CNN (another architecture?): missing" in last_error(err)
    assert tree_hash(run) == before


def test_a_resume_keeps_every_earlier_row_and_the_report_counts_every_epoch(run):
    from visionlab.entrypoints.report import read_run

    rows_before = (run / "csv" / "metrics.csv").read_text().splitlines()
    code, err = run_main(
        train_main, [f"ckpt_path={run}/checkpoints/last.ckpt", "trainer.max_epochs=3", "scheduler=onecycle"]
    )
    assert code == 2 and "OneCycleLR has a fixed length" in last_error(err)  # the default schedule
    assert (run / "csv" / "metrics.csv").read_text().splitlines() == rows_before
    # a run with a schedule that can be continued
    step_run = run.parent / "step"
    assert run_main(train_main, [*TINY, "scheduler=step", f"hydra.run.dir={step_run}"])[0] == 0
    rows_before = (step_run / "csv" / "metrics.csv").read_text().splitlines()
    code, err = run_main(train_main, [f"ckpt_path={step_run}/checkpoints/last.ckpt", "trainer.max_epochs=3"])
    assert code == 0, err
    rows = (step_run / "csv" / "metrics.csv").read_text().splitlines()
    assert rows[: len(rows_before)] == rows_before and len(rows) > len(rows_before)
    assert read_run(step_run, step_run.parent).epochs == 3
    info = json.loads((step_run / "run_info.json").read_text())
    assert len(info["resumes"]) == 1 and "trainer.max_epochs=3" in info["resumes"][0]["command"]


# --- 4. one run per folder --------------------------------------------------------------------
def test_a_second_run_into_a_locked_folder_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    owner = subprocess.Popen(["sleep", "60"])
    busy = tmp_path / "busy"  # a run starting there now: it holds the lock
    busy.mkdir()
    try:
        (busy / ".lock").write_text(json.dumps({"pid": owner.pid, "host": os.uname().nodename, "started": "then"}))
        before = tree_hash(busy)
        code, err = run_main(train_main, [*TINY, f"hydra.run.dir={busy}"])
        assert code == 2
        assert last_error(err).startswith(f"error: {busy} is in use by pid {owner.pid} on {os.uname().nodename}")
        assert tree_hash(busy) == before
    finally:
        owner.kill()
        owner.wait()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / ".lock").write_text(json.dumps({"pid": owner.pid, "host": os.uname().nodename, "started": "then"}))
    code, err = run_main(train_main, [*TINY, "test=false", f"hydra.run.dir={fresh}"])
    assert code == 0, err
    assert not (fresh / ".lock").exists() and (fresh / "checkpoints" / "last.ckpt").is_file()


# --- 5. limits ----------------------------------------------------------------------------------
def test_sizes_beyond_the_data_or_the_memory_are_refused_with_the_estimate(tmp_path, monkeypatch):
    code, err = run_main(train_main, [*TINY, "data.batch_size=100000000", f"hydra.run.dir={tmp_path / 'a'}"])
    assert code == 2 and last_error(err).startswith("error: data.batch_size=100000000 needs about ")
    assert "GiB available on cpu; use a smaller data.batch_size" in last_error(err)
    import visionlab.utils.limits

    monkeypatch.setattr(visionlab.utils.limits, "available_bytes", lambda device="cpu": 2**20)
    code, err = run_main(train_main, [*TINY, "data.batch_size=64", f"hydra.run.dir={tmp_path / 'b'}"])
    assert code == 2
    assert last_error(err).startswith("error: data.batch_size=64 needs about")
    assert "MiB of activations per image, x3), more than the 0.0 GiB available on cpu" in last_error(err)
    from visionlab.app.config import ConfigError
    from visionlab.data import ImageFolderDataModule

    folder = tmp_path / "images"
    for c in ("a", "b"):
        (folder / c).mkdir(parents=True)
        for i in range(2):
            (folder / c / f"{i}.png").write_bytes(b"")  # never decoded: refused before
    with pytest.raises(ConfigError, match=r"data.image_size: data.root=.*: 4 images of \(3, 1000, 1000\) need 0.0 GiB"):
        ImageFolderDataModule(root=str(folder), image_size=1000).setup()


@pytest.mark.parametrize("value", ["1.0", "5000.0"])
def test_an_ambiguous_val_size_is_refused(value, tmp_path):
    code, err = run_main(train_main, [*TINY, f"data.val_size={value}", f"hydra.run.dir={tmp_path}"])
    assert code == 2 and f"error: data.val_size={value} is not allowed" in last_error(err)


# --- 6. data checked for what it claims ---------------------------------------------------------
def mnist_folder(folder: Path, train_images=None, train_labels=None, test_images=None) -> Path:
    rng = np.random.default_rng(0)
    parts = {
        "train-images-idx3-ubyte.gz": train_images if train_images is not None else rng.integers(0, 255, (40, 28, 28)),
        "train-labels-idx1-ubyte.gz": train_labels if train_labels is not None else np.arange(40) % 10,
        "t10k-images-idx3-ubyte.gz": test_images if test_images is not None else rng.integers(0, 255, (20, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": np.arange(20) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in parts.items():
        write_idx(folder / name, np.asarray(array))
    return folder


MNIST = ["data=mnist", "data.verify=false", "data.val_size=8", "data.batch_size=8", "test=false"]


@pytest.mark.parametrize(
    "case,message",
    [
        ("int8", "train-images-idx3-ubyte.gz: idx type byte is 0x09 (int8); expected 0x08 (uint8)"),
        ("labels_3d", "train-labels-idx1-ubyte.gz: idx file has 3 dimensions; expected 1"),
        ("label_200", ": train labels hold 200; expected 0..9 (10 classes)"),
        ("test_size", ": test images have shape (1, 32, 32); expected (1, 28, 28) like the training images"),
    ],
)
def test_mnist_files_that_claim_something_else_are_refused_before_training(case, message, tmp_path):
    folder = tmp_path / "mnist"
    if case == "labels_3d":
        mnist_folder(folder, train_labels=np.zeros((40, 1, 1)))
    elif case == "label_200":
        mnist_folder(folder, train_labels=np.full(40, 200))
    elif case == "test_size":
        mnist_folder(folder, test_images=np.zeros((20, 32, 32)))
    else:
        mnist_folder(folder)
        raw = gzip.decompress((folder / "train-images-idx3-ubyte.gz").read_bytes())
        (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:2] + b"\x09" + raw[3:]))
    code, err = run_main(train_main, [*BASE, *MNIST, f"data.data_dir={folder}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert code == 2 and message in last_error(err), err[-2000:]
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained


def test_links_in_an_image_folder_never_loop_nor_leave_the_root(tmp_path):
    from PIL import Image

    from visionlab.data.image_folder import class_folders

    root, outside = tmp_path / "root", tmp_path / "outside"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / c / "a.png")
    outside.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(outside / "x.png")
    (root / "loop").symlink_to(root)  # the folder itself: not a class
    (root / "cat" / "again").symlink_to(root / "cat")  # a loop inside a class
    (root / "dog" / "x.png").symlink_to(outside / "x.png")  # a file out of the root
    (root / "away").symlink_to(outside)  # a class folder out of the root
    assert {c: [p.name for p in files] for c, files in class_folders(root).items()} == {
        "cat": ["a.png"],
        "dog": ["a.png"],
    }


def test_a_corrupt_cached_copy_is_replaced_from_its_source_without_checksums(tmp_path, monkeypatch):
    from visionlab.data.mnist import MNIST as FILES
    from visionlab.data.sources import ensure_files

    source = mnist_folder(tmp_path / "source")
    monkeypatch.setenv("VISIONLAB_MNIST_DIR", str(source))
    cache = tmp_path / "cache"
    ensure_files(FILES, cache, verify=False)
    (cache / "train-images-idx3-ubyte.gz").write_bytes(b"corrupt")
    ensure_files(FILES, cache, verify=False)
    assert (cache / "train-images-idx3-ubyte.gz").read_bytes() == (source / "train-images-idx3-ubyte.gz").read_bytes()


# --- 7. one line where a traceback was ------------------------------------------------------
@pytest.mark.parametrize(
    "kind,message",
    [
        ("truncated", "cannot load: truncated or corrupt archive"),
        ("empty", "cannot load: the file is empty"),
        ("pickled", "refused: the file holds builtins.getattr, pathlib.Path, pathlib.PosixPath, which would run code"),
    ],
)
def test_train_from_a_bad_checkpoint_file_fails_in_one_line(kind, message, trained, tmp_path):
    bad = tmp_path / "bad.ckpt"
    if kind == "truncated":
        bad.write_bytes((trained / "checkpoints" / "last.ckpt").read_bytes()[:-200])
    elif kind == "empty":
        bad.write_bytes(b"")
    else:
        torch.save({"state_dict": {}, "payload": Payload(tmp_path / "pwned")}, bad)
    code, err = run_main(train_main, [*TINY, f"ckpt_path={bad}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert code == 2 and last_error(err).startswith(f"error: ckpt_path={bad}: {message}")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "run").exists()


def test_export_into_a_folder_it_cannot_write_fails_in_one_line(trained, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    code, err = run_main(
        export.main,
        [
            f"ckpt_path={trained}/checkpoints/last.ckpt",
            f"paths.output_dir={blocker}/out",
            f"hydra.run.dir={tmp_path / 'log'}",
        ],
    )
    assert code == 2 and last_error(err).startswith(f"error: paths.output_dir={blocker}/out: cannot write the export")


@pytest.mark.parametrize(
    "args,message",
    [
        (["seed=abc"], "error: seed='abc' is not allowed; expected an integer >= 0"),
        (["+seeds=1"], "error: +seeds=1: seeds is not a key of train's config; did you mean seed?"),
        (["+foo=bar"], "error: +foo=bar: foo is not a key of train's config; known keys:"),
    ],
)
def test_bad_top_level_values_and_unknown_keys_fail_in_one_line_naming_the_key(args, message, tmp_path):
    code, err = run_main(train_main, [*TINY, *args, f"hydra.run.dir={tmp_path / 'run'}"])
    assert code == 2 and last_error(err).startswith(message)
    assert not (tmp_path / "run").exists()


# --- 8. messages that say what happened -------------------------------------------------------
def test_a_report_names_a_bad_metrics_file_and_goes_on(trained, tmp_path):
    from visionlab.entrypoints.report import write_report

    sweep = tmp_path / "sweep"
    shutil.copytree(trained, sweep / "0")
    shutil.copytree(trained, sweep / "1")
    (sweep / "1" / "metrics.json").write_text("{not json")
    runs = write_report(sweep)
    assert [r.status for r in runs] == ["ok", "unreadable"]
    assert "Expecting property name" in runs[1].error
    assert "`1` (unreadable)" in (sweep / "report.md").read_text()
