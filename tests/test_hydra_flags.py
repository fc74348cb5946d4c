"""Hydra's own flags on every entry point, with the behaviour Hydra documents: visionlab's
checks before Hydra starts read only the overrides (`--help` used to end in
`error: LexerNoViableAltException: --help ^`), and informational flags run nothing."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from conftest import FAST, REPO, run_main
from visionlab.app.assemble import CHECKS
from visionlab.app.cli import prepare_run
from visionlab.app.config import ConfigError
from visionlab.entrypoints import evaluate, export, predict
from visionlab.entrypoints import train as train_entry
from visionlab.serve import server

ENTRIES: dict[str, tuple[Callable[[], None], str]] = {  # config name -> (main, words of its --help)
    "train": (train_entry.main, "visionlab-train (scripts/train.py): train an image classifier"),
    "evaluate": (evaluate.main, "visionlab-evaluate (scripts/evaluate.py)"),
    "predict": (predict.main, "visionlab-predict (scripts/predict.py)"),
    "export": (export.main, "visionlab-export (scripts/export.py)"),
    "serve": (server.main, "visionlab-serve (scripts/serve.py): an HTTP server"),
}


@pytest.fixture
def quiet_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cwd and VISIONLAB_ROOT in an empty folder, to see that an informational flag writes nothing."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VISIONLAB_ROOT", str(tmp_path))
    return tmp_path


def _run(main: Callable[[], None], args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if type(h) is logging.StreamHandler]:
        root.removeHandler(handler)  # Hydra's console handler of an earlier test writes to a closed capture
    capsys.readouterr()
    code, err = run_main(main, args)
    out = capsys.readouterr().out
    assert code == 0, f"{args}: exit {code}\n{err}\n{out}"
    assert "error" not in err.lower(), err
    return out


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_every_informational_flag_answers_and_writes_nothing(
    name: str, quiet_folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    main, about = ENTRIES[name]
    for flag in ("--help", "-h"):
        out = _run(main, [flag], capsys)
        assert out.startswith(about), out
        for section in ("== Config groups (group=option) ==", "== Main keys (key=default) ==", "== Examples =="):
            assert section in out
        assert "$" not in out.replace("$VISIONLAB_ROOT", "")  # every template placeholder was filled
        assert ("seed=42" if name == "train" else "ckpt_path=null") in out
    if name == "train":  # the main keys show the values the overrides give; the groups their options
        assert "model: cnn, mlp," in out
        assert "optimizer.lr=0.25" in _run(main, ["--help", "optimizer.lr=0.25"], capsys)
        assert "Config search path" in _run(main, ["--info"], capsys)
        monkeypatch.setenv("COMP_LINE", "prog se")  # what bash hands the completion query
        assert "seed=" in _run(main, ["-sc", "query=bash"], capsys).split()
    assert _run(main, ["--hydra-help"], capsys).startswith("Hydra (1.3")
    job = yaml.safe_load(_run(main, ["--cfg", "job", "seed=7"], capsys))
    assert job["seed"] == 7 and "hydra" not in job
    assert _run(main, ["--cfg", "hydra", "-p", "hydra.job.name"], capsys).strip() == name
    resolved = _run(main, ["--cfg", "all", "--package", "paths", "--resolve"], capsys)
    assert resolved.startswith("# @package paths") and f"log_dir: {quiet_folder}/outputs" in resolved
    assert "Defaults List" in _run(main, ["--info", "defaults"], capsys)
    assert "hydra_bash_completion" in _run(main, ["--shell-completion", "install=bash"], capsys)
    assert not list(quiet_folder.iterdir()), "an informational flag wrote files"


def test_config_name_path_and_dir_choose_another_primary_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mine.yaml").write_text("defaults:\n  - train\n  - _self_\nseed: 5\n")
    assert (
        _run(train_entry.main, ["-cn", "lr_find", "--cfg", "all", "-p", "hydra.job.name"], capsys).strip() == "lr_find"
    )
    assert (
        _run(train_entry.main, ["--config-name=lr_find", "--cfg", "all", "-p", "hydra.job.name"], capsys).strip()
        == "lr_find"
    )
    for flag in ("-cd", "--config-dir"):  # a folder searched besides conf/
        job = yaml.safe_load(_run(train_entry.main, [flag, str(tmp_path), "-cn", "mine", "--cfg", "job"], capsys))
        assert job["seed"] == 5 and job["model"]["_target_"] == "visionlab.models.CNN"
    for flag in ("-cp", "--config-path"):  # the folder instead of conf/
        args = [flag, str(REPO / "conf"), "-cn", "evaluate", "--cfg", "all", "-p", "hydra.job.name"]
        assert _run(train_entry.main, args, capsys).strip() == "evaluate"


def test_the_checks_read_the_overrides_and_pass_the_flags_through(tmp_path: Path) -> None:
    run = tmp_path / "run"
    informational = [
        ["--help", "model=nope"],
        ["--cfg", "job", "--package", "trainer", "seed=-1"],
        ["--info", "config"],
        ["-sc", "install=bash"],
        ["--hydra-help"],
    ]
    for argv in informational:  # not checked, not locked, nothing written
        assert prepare_run("train", [*argv, f"hydra.run.dir={run}"], locks=True, resumes=True) == (
            [*argv, f"hydra.run.dir={run}"],
            None,
            None,
        )
    assert not run.exists()
    # another primary config, or a sweep: each job is checked as it builds; the flags are kept
    assert prepare_run("train", ["-m", "seed=1,2"])[0] == ["-m", "seed=1,2"]
    assert prepare_run("train", ["seed=1", "--multirun"])[0] == ["--multirun", "seed=1"]
    assert prepare_run("train", ["-cn", "lr_find", "seed=1"])[0] == ["-cn", "lr_find", "seed=1"]
    # a real run is checked as before, whatever flag stands beside the overrides
    for argv in (["model=nope"], ["--run", "model=nope"], ["-m", "model=nope"]):
        with pytest.raises(ConfigError, match="model=nope is not an option"):
            prepare_run("train", argv)
    with pytest.raises(ConfigError, match="seed=-1"):
        prepare_run("train", ["-r", "seed=-1"], CHECKS)
    argv, lock, _ = prepare_run("train", ["--run", *FAST, f"hydra.run.dir={run}"], CHECKS, locks=True)
    assert lock is not None and (run / ".lock").exists() and argv[0] == "--run"
    lock.release()


def test_a_sweep_and_a_rerun_of_its_saved_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """-m runs one job per value; --experimental-rerun reruns a job from the config.pickle
    that Hydra's PickleJobInfoCallback saved (Hydra writes it only with that callback on)."""
    monkeypatch.setenv("VISIONLAB_ROOT", str(tmp_path))
    pickle_on = "+hydra.callbacks.save_job_info._target_=hydra.experimental.callbacks.PickleJobInfoCallback"
    sweep = tmp_path / "sweep"
    code, err = run_main(train_entry.main, ["-m", *FAST, "seed=1,2", pickle_on, f"hydra.sweep.dir={sweep}"])
    assert code == 0, err
    saved = sweep / "1" / ".hydra" / "config.pickle"
    assert (sweep / "0" / ".hydra" / "config.pickle").exists() and saved.exists()
    (sweep / "1" / "run_info.json").unlink()
    code, err = run_main(train_entry.main, ["--experimental-rerun", str(saved)])
    assert code == 0, err
    assert '"seed": 2' in (sweep / "1" / "run_info.json").read_text()


def test_the_console_command_takes_hydras_flags() -> None:
    """The installed `visionlab-train` (a real process) prints its help instead of a lexer error."""
    command = shutil.which("visionlab-train", path=str(Path(sys.executable).parent)) or "visionlab-train"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([command, "--help"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("visionlab-train (scripts/train.py)") and "LexerNoViableAlt" not in done.stderr
