"""Lightning's load_from_checkpoint with Lightning's arguments, a file that would run code
named as such, and a bug told apart from the user's bad value."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from conftest import run_main, tree_hash
from visionlab.app.assemble import CHECKS as TRAIN_CHECKS
from visionlab.app.assemble import build
from visionlab.app.cli import hydra_entry, prepare_run
from visionlab.app.config import compose_config, override
from visionlab.app.resume import latest_last_checkpoint
from visionlab.entrypoints import evaluate, export, predict
from visionlab.entrypoints.train import main as train_main
from visionlab.training.checkpoint import CheckpointError, read_checkpoint
from visionlab.training.task import ClassifierTask
from visionlab.utils.errors import BUG_NOTE, ConfigError

FAST = (
    "data=synthetic",
    "model=mlp",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks=none",
    "logger=none",
    "test=false",
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ClassifierTask]:
    """One tiny trained task and its Lightning checkpoint, shared by the tests below."""
    folder = tmp_path_factory.mktemp("trained")
    datamodule, task, trainer = build(compose_config(FAST, output_dir=folder))
    trainer.fit(task, datamodule=datamodule)
    path = folder / "task.ckpt"
    trainer.save_checkpoint(path)
    return path, task


class RunsCode:
    """Unpickling this calls os.system: the file a malicious checkpoint would be."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., int], tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    state = b.state_dict()
    return all(torch.equal(v.cpu(), state[k].cpu()) for k, v in a.state_dict().items())


def test_load_from_checkpoint_takes_map_location(trained):
    path, task = trained
    for where in ("cpu", torch.device("cpu"), {"cpu": "cpu"}, lambda storage, _: storage):
        loaded = ClassifierTask.load_from_checkpoint(path, map_location=where)
        assert loaded.device == torch.device("cpu") and _same_weights(loaded, task)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_load_from_checkpoint_moves_the_task_where_map_location_says(trained):
    path, task = trained
    loaded = ClassifierTask.load_from_checkpoint(path, map_location="cuda")
    assert loaded.device.type == "cuda" and _same_weights(loaded, task)
    x = torch.randn(2, *loaded.net.input_shape, device="cuda")
    assert loaded.eval()(x).device.type == "cuda"


def test_load_from_checkpoint_takes_an_hparams_file_and_kwargs_win(trained, tmp_path):
    path, _ = trained
    yaml_file = tmp_path / "hparams.yaml"
    yaml_file.write_text("loss: hinge\nlabel_smoothing: 0.0\nl2: 0.01\nbatch_size: 64\n")  # batch_size: not the task's
    loaded = ClassifierTask.load_from_checkpoint(path, hparams_file=yaml_file)
    assert loaded.loss_name == "hinge" and loaded.l2 == 0.01
    assert (
        ClassifierTask.load_from_checkpoint(path, hparams_file=yaml_file, loss="cross_entropy").loss_name
        == "cross_entropy"
    )
    csv_file = tmp_path / "hparams.csv"
    csv_file.write_text("key,value\nloss,hinge\n")
    assert ClassifierTask.load_from_checkpoint(path, hparams_file=csv_file).loss_name == "hinge"
    with pytest.raises(ConfigError, match=r"hparams_file=.*hparams.txt: expected a .yaml, .yml or .csv file"):
        ClassifierTask.load_from_checkpoint(path, hparams_file=tmp_path / "hparams.txt")


def test_load_from_checkpoint_strict(trained, tmp_path):
    path, task = trained
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"]["net.extra"] = torch.zeros(1)
    extra = tmp_path / "extra.ckpt"
    torch.save(checkpoint, extra)
    with pytest.raises(RuntimeError, match="Unexpected key.*net.extra"):
        ClassifierTask.load_from_checkpoint(extra)
    with pytest.raises(RuntimeError, match="Unexpected key.*net.extra"):
        ClassifierTask.load_from_checkpoint(extra, strict=True)
    assert _same_weights(ClassifierTask.load_from_checkpoint(extra, strict=False), task)


def test_load_from_checkpoint_weights_only(trained, tmp_path):
    """weights_only=None and True refuse a pickled object, naming it; False (the caller's
    explicit choice, as in Lightning) loads it."""
    path, task = trained
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["hyper_parameters"] = argparse.Namespace(lr=0.1)  # as old scripts saved their args
    pickled = tmp_path / "namespace.ckpt"
    torch.save(checkpoint, pickled)
    for weights_only in (None, True):
        with pytest.raises(CheckpointError, match=r"refused: the file holds argparse.Namespace, which would run code"):
            ClassifierTask.load_from_checkpoint(pickled, weights_only=weights_only)
    assert _same_weights(ClassifierTask.load_from_checkpoint(pickled, weights_only=False), task)


def test_a_file_that_would_run_code_is_named_as_such(trained, tmp_path):
    """It used to read `cannot load: truncated or corrupt archive (Weights only load failed)`."""
    path, _ = trained
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": RunsCode(marker)}, evil)
    expected = (
        f"ckpt_path={evil}: refused: the file holds posix.system, which would run code when loaded; "
        "visionlab loads weights only"
    )
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(evil)
    assert str(err.value) == expected
    for entry, extra in ((evaluate, []), (predict, ["predict.from_test=1"]), (export, [])):
        out = tmp_path / f"out-{entry.__name__.rpartition('.')[2]}"  # each command its own new folder
        code, stderr = run_main(entry.main, [f"ckpt_path={evil}", *extra, f"hydra.run.dir={out}"])
        assert (code, stderr) == (2, f"error: {expected}\n")
    assert not marker.exists()
    # the other refusals keep their own words
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="cannot load: truncated or corrupt archive"):
        read_checkpoint(truncated)
    (tmp_path / "empty.ckpt").touch()
    with pytest.raises(CheckpointError, match="cannot load: the file is empty"):
        read_checkpoint(tmp_path / "empty.ckpt")
    legacy = tmp_path / "legacy.ckpt"
    torch.save({"payload": RunsCode(marker)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="legacy-format .* which would run code when loaded"):
        read_checkpoint(legacy)
    assert not marker.exists()


def _entry(raises: Callable[[DictConfig], object]) -> Callable[[], None]:
    return hydra_entry("evaluate", raises)


@pytest.mark.parametrize(
    ("target", "user"),
    [
        ({"_target_": "visionlab.models.MLP", "input_shape": [1, 2, 2], "num_classes": 2, "hidden": []}, True),
        ({"_target_": "visionlab.models.MLP", "input_shape": [1, 2, 2], "num_classes": 2, "bogus": 1}, True),
        ({"_target_": "visionlab.models.NoSuchNet"}, True),
        ({"_target_": "lightning.Trainer", "precision": "bogus"}, True),  # Lightning's ValueError for the user's flag
        ({"_target_": "fractions.Fraction", "numerator": "not a number"}, False),  # a ValueError in code: a bug
    ],
)
def test_instantiation_errors_are_the_users_or_a_bug(target, user, tmp_path, capsys):
    code, err = run_main(_entry(lambda cfg: instantiate(target)), [f"hydra.run.dir={tmp_path}"])
    if user:
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    else:
        assert code == 1 and "Traceback" in err and err.rstrip().endswith(BUG_NOTE), err


def test_a_bug_shows_its_traceback_and_asks_to_report_it(tmp_path):
    def buggy(cfg: DictConfig) -> None:
        raise ValueError("an index went wrong")

    def bad_value(cfg: DictConfig) -> None:
        raise ConfigError("split=x is not allowed; expected test or val")

    code, err = run_main(_entry(buggy), [f"hydra.run.dir={tmp_path / 'a'}"])
    assert code == 1 and "Traceback (most recent call last)" in err and "ValueError: an index went wrong" in err
    assert err.rstrip().endswith(BUG_NOTE)
    assert (tmp_path / "a" / "error.txt").read_text() == "error: ValueError: an index went wrong\n"
    code, err = run_main(_entry(bad_value), [f"hydra.run.dir={tmp_path / 'b'}"])
    assert (code, err) == (2, "error: split=x is not allowed; expected test or val\n")


def test_ckpt_path_last_is_the_newest_runs_last_checkpoint(tmp_path):
    """Not the most recently written last.ckpt: resuming an older run rewrites its file."""

    def run(name: str, with_last: bool = True) -> Path:
        ckpt = tmp_path / "runs" / name / "checkpoints" / "last.ckpt"
        ckpt.parent.mkdir(parents=True)
        if with_last:
            ckpt.write_bytes(b"x")
        return ckpt

    newest = run("2026-01-02/09-00-00")
    older = run("2026-01-01/23-00-00")  # written after the newest run's: it was resumed
    run("2026-01-02/10-00-00", with_last=False)  # stopped before its first checkpoint
    assert older.stat().st_mtime >= newest.stat().st_mtime
    assert latest_last_checkpoint(tmp_path) == newest


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of the train command that trained its one epoch, with the default callbacks (last.ckpt)."""
    log_dir = tmp_path_factory.mktemp("outputs")
    run = log_dir / "runs" / "2026-01-01" / "00-00-00"
    code, err = run_main(
        train_main,
        [*FAST[:-3], "scheduler=none", "logger=none", "test=false", f"paths.log_dir={log_dir}", f"hydra.run.dir={run}"],
    )
    assert code == 0, err
    return run


def test_a_resume_with_nothing_left_to_train_says_so(finished_run, tmp_path):
    """It used to fit nothing and test the checkpoint again, silently."""
    last = finished_run / "checkpoints" / "last.ckpt"
    log_dir = finished_run.parents[2]
    for args, reached in (
        (["ckpt_path=last", f"paths.log_dir={log_dir}"], "trainer.max_epochs=1"),
        ([f"ckpt_path={last}", "trainer.max_steps=1"], "trainer.max_steps=1"),
    ):
        with pytest.raises(
            ConfigError,
            match=rf"^ckpt_path={last}: the run already trained .*{reached} .*"
            "so a resume has nothing left to train; to train longer",
        ):
            prepare_run("train", args, TRAIN_CHECKS, resumes=True)
    before = tree_hash(finished_run)
    code, err = run_main(train_main, [f"ckpt_path={last}"])
    assert code == 2 and err.count("\n") == 1 and "the run already trained 1 of trainer.max_epochs=1 epochs" in err
    assert tree_hash(finished_run) == before  # nothing written
    argv = prepare_run("train", [f"ckpt_path={last}", "trainer.max_epochs=2"], TRAIN_CHECKS, resumes=True).argv
    assert override("ckpt_path", last) in argv  # more epochs: a resume like any other


def test_the_python_api_writes_where_its_settings_say_and_says_where(tmp_path, monkeypatch, caplog):
    """A notebook's folder used to get ./data and ./outputs, unannounced."""
    import visionlab
    from visionlab.api import data_cache

    notebook = tmp_path / "notebook"
    notebook.mkdir()
    monkeypatch.chdir(notebook)
    monkeypatch.delenv("VISIONLAB_ROOT", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_cache() == tmp_path / "cache" / "visionlab" / "data"
    root = tmp_path / "my runs"  # a space, as folder names have
    caplog.set_level("INFO", logger="visionlab")
    visionlab.train([*FAST[:-3], "scheduler=none", "logger=none", "test=false"], root=root)
    run = next((root / "outputs" / "runs").glob("*/*"))
    assert (run / "run_info.json").is_file() and (run / "train.log").is_file()
    assert f"visionlab.train: writing to {run}; data in {data_cache()}" in caplog.text
    assert f"writing to {run}" in (run / "train.log").read_text()
    model = visionlab.load_model(run / "checkpoints" / "last.ckpt", root=root)
    model.evaluate("test")
    assert next((root / "outputs" / "evaluate").glob("*/*/metrics.json")).is_file()
    assert not list(notebook.iterdir()), "the API wrote into the current folder"
