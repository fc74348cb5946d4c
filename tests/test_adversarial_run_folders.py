"""The adversarial probe of issue 25, run-folder families, as a table: each case tampers
with a copy of one finished run folder (or points a command at it) and names its outcome:
a one-line refusal, or a correct result. In every case no payload runs and nothing outside
the folder a command owns changes."""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import Payload, run_main, tree_hash
from visionlab.entrypoints import evaluate, export, predict
from visionlab.entrypoints.train import main as train_main

# scheduler=none: a run that can be continued past its length (one-cycle cannot)
TINY = [
    "data=synthetic",
    "data.train_size=64",
    "data.val_size=32",
    "data.test_size=32",
    "data.batch_size=16",
    "model=mlp",
    "model.hidden=[8]",
    "scheduler=none",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "logger=csv",
    "callbacks.progress_bar=null",
    "trainer.enable_model_summary=false",
    "callbacks.history.plot=false",
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    code, err = run_main(train_main, [*TINY, f"hydra.run.dir={run}"])
    assert code == 0, err
    return run


@dataclass
class World:
    run: Path  # a private copy of the finished run, to tamper with
    tmp: Path
    marker: Path  # created only if a payload ran
    payload: Path  # a pickle whose loading creates `marker`


@pytest.fixture
def world(finished, tmp_path) -> World:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    marker, payload = tmp_path / "pwned", tmp_path / "payload.pt"
    payload.write_bytes(pickle.dumps(Payload(marker)))
    return World(run, tmp_path, marker, payload)


def last_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def edit_config(w: World, key: str, value: str) -> None:
    """Set `data.<key>` or `model.<key>` in the run's .hydra/config.yaml."""
    path = w.run / ".hydra" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    group, _, name = key.partition(".")
    config[group][name] = value.format(payload=w.payload)
    path.write_text(yaml.safe_dump(config))


def add_overrides(w: World, *lines: str) -> None:
    path = w.run / ".hydra" / "overrides.yaml"
    path.write_text(yaml.safe_dump([*yaml.safe_load(path.read_text()), *(s.format(payload=w.payload) for s in lines)]))


CREATE = "${{oc.create:{{_target_: torch.load, f: {payload}, weights_only: false}}}}"
ENTRIES = {"eval": evaluate.main, "predict": predict.main, "export": export.main, "train": train_main}


# (id, tamper(world), command, args(world), expected last stderr line fragment)
@dataclass
class Case:
    id: str
    tamper: Callable[[World], None]
    command: str
    args: Callable[[World], list[str]]
    refusal: str


def ckpt(w: World, name: str = "last.ckpt") -> str:
    return f"ckpt_path={w.run}/checkpoints/{name}"


def out(w: World) -> str:
    return f"hydra.run.dir={w.tmp / 'out'}"


CODE_EXECUTION = [
    # 1. a resolver in the run's config turns into a live _target_ when the data is built
    *[
        Case(
            f"config-{where}-{cmd}",
            lambda w, where=where, v=value: edit_config(w, where, v),
            cmd,
            lambda w, cmd=cmd: [ckpt(w), *(["predict.from_test=2"] if cmd == "predict" else []), out(w)],
            "which is not allowed from a run folder or checkpoint",
        )
        for where, value in [
            ("data.extra", CREATE),
            ("model.extra", CREATE),
            ("data.extra", "\\" + CREATE),
            ("data.extra", "${{oc.decode:'{{_target_: torch.load, f: {payload}}}'}}"),
            ("data.data_dir", "${{oc.env:HOME}}"),
        ]
        for cmd in ("eval", "predict")
    ],
    # 2. a replayed override read one way by PyYAML and another by Hydra's grammar
    *[
        Case(
            f"override-{i}",
            lambda w, line=line: add_overrides(w, line),
            "train",
            lambda w: [ckpt(w), "trainer.max_epochs=2"],
            refusal,
        )
        for i, (line, refusal) in enumerate(
            [
                (
                    "+callbacks.evil={{_target_:torch.load,_args_:[{payload}],weights_only:false}}",
                    "callbacks.evil._target_='torch.load' is not allowed from a run folder",
                ),
                (
                    "+callbacks.evil={{_target_: torch.load, _args_: [{payload}], weights_only: false}}",
                    "callbacks.evil._target_='torch.load' is not allowed from a run folder",
                ),
                ("callbacks.history._target_=torch.load", "callbacks.history._target_='torch.load' is not allowed"),
                ("+callbacks.evil='${{oc.env:HOME}}'", "calls oc.env, which is not allowed"),
                ("+callbacks.evil='\\${{oc.env:HOME}}'", "hides an interpolation behind an escape"),
                ("+callbacks@hydra.callbacks=default", "is not replayed by a resume"),
                ("hydra.callbacks.evil._target_=torch.load", "is not replayed by a resume"),
                ("model.hidden=[8],[16]", "is not replayed by a resume"),
            ]
        )
    ],
    # 3. Hydra flags in the overrides file would compose another config
    *[
        Case(
            f"flag-{i}",
            lambda w, lines=lines: add_overrides(w, *lines),
            "train",
            lambda w: [ckpt(w), "trainer.max_epochs=2"],
            "is not a config override (Hydra flags are never replayed)",
        )
        for i, lines in enumerate([("--config-dir=/tmp/c", "--config-name=evil"), ("-cn=evil",), ("-m",)])
    ],
]


def link_csv(w: World) -> None:
    victim = w.tmp / "victim.csv"
    victim.write_text("precious\n")
    (w.run / "csv" / "metrics.csv").unlink()
    (w.run / "csv" / "metrics.csv").symlink_to(victim)


def nothing(w: World) -> None:
    pass


DATA_LOSS = [
    # 4. a resume writes into the folder: a link there would carry the writes outside
    Case(
        "symlink-resume",
        link_csv,
        "train",
        lambda w: [ckpt(w), "trainer.max_epochs=2"],
        "is a symbolic link; a resume writes into run",
    ),
    # 5. a command pointed at an existing run folder
    *[
        Case(
            f"run-dir-{cmd}",
            nothing,
            cmd,
            lambda w, cmd=cmd: [
                ckpt(w),
                *(["predict.from_test=2"] if cmd == "predict" else []),
                f"hydra.run.dir={w.run}",
            ],
            "already holds a run (.hydra, checkpoints, metrics.json, run_info.json); choose a new folder",
        )
        for cmd in ("eval", "predict", "export")
    ],
    Case(
        "run-dir-train",
        nothing,
        "train",
        lambda w: [*TINY, f"hydra.run.dir={w.run}"],
        "to continue that run, resume it: ckpt_path=<run>/checkpoints/last.ckpt",
    ),
    # 6. export names are file names
    *[
        Case(
            f"export-name-{i}",
            nothing,
            "export",
            lambda w, name=name: [ckpt(w), f"name={name}", out(w)],
            "is not allowed; expected a file name without a folder",
        )
        for i, name in enumerate(["/tmp/R2/metrics", "../metrics", "a/b", ".hidden", ".."])
    ],
    # 7. resuming a finished run, or from a weights-only file
    Case("finished-resume", nothing, "train", lambda w: [ckpt(w)], "so a resume has nothing left to train"),
    Case(
        "restored-best-resume",
        nothing,
        "train",
        lambda w: [ckpt(w, "restored_best.ckpt"), "trainer.max_epochs=2"],
        "holds weights only (no optimizer or loop state), so it cannot resume a run",
    ),
]


@pytest.mark.parametrize("case", CODE_EXECUTION + DATA_LOSS, ids=lambda c: c.id)
def test_a_tampered_run_or_a_stray_path_is_refused_in_one_line_and_nothing_changes(case, world):
    case.tamper(world)
    before = tree_hash(world.run)
    outside = {p: p.read_bytes() for p in world.tmp.glob("*.csv")}
    code, err = run_main(ENTRIES[case.command], case.args(world))
    assert (code, case.refusal in last_line(err)) == (2, True), err
    assert last_line(err).startswith("error: ") and "Traceback" not in err
    assert not world.marker.exists()
    assert tree_hash(world.run) == before
    assert {p: p.read_bytes() for p in world.tmp.glob("*.csv")} == outside
    if (world.tmp / "out").exists():  # refused inside the command: its own folder records why
        assert (world.tmp / "out" / "error.txt").read_text().strip() == last_line(err)


@pytest.mark.parametrize("how", ["copied", "moved"])
def test_a_copied_or_moved_run_resumes_into_itself(how, finished, world, tmp_path):
    """The checkpoints' saved paths name the folder the run was trained in: a resume of a
    copy tests the copy's own best checkpoint, keeps its epochs in metrics.json and leaves
    the original untouched; after a move it does not look for the original at all."""
    if how == "copied":
        original, run = finished, world.run
    else:
        original, run = tmp_path / "trained_here", tmp_path / "moved_there"
        code, err = run_main(train_main, [*TINY, f"hydra.run.dir={original}"])
        assert code == 0, err
        original.rename(run)
    before = tree_hash(original) if original.exists() else {}
    code, err = run_main(train_main, [f"ckpt_path={run}/checkpoints/last.ckpt", "trainer.max_epochs=2"])
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert Path(metrics["test/ckpt_path"]).parent == run / "checkpoints"
    assert Path(metrics["test/ckpt_path"]).is_file()
    assert {"val/acc", "val/loss", "train/loss", "test/acc"} <= metrics.keys()
    assert (tree_hash(original) if original.exists() else {}) == before
    assert not (ERROR_FILE_NAME := run / "error.txt").exists(), ERROR_FILE_NAME.read_text()


def test_a_moved_checkpoint_callback_keeps_its_best_score_and_forgets_files_that_did_not_move(tmp_path):
    """Lightning reloads only best_model_path when the dirpath changed (so the next epoch is
    'best' whatever its score); the rebased state keeps the score and the paths of files
    that are really in the new folder."""
    from visionlab.training.callbacks import ModelCheckpoint

    old, new = tmp_path / "old" / "checkpoints", tmp_path / "new" / "checkpoints"
    new.mkdir(parents=True)
    (new / "epoch003.ckpt").write_bytes(b"x")
    state = {
        "dirpath": str(old),
        "best_model_path": str(old / "epoch003.ckpt"),
        "best_model_score": 0.9,
        "kth_best_model_path": str(old / "epoch001.ckpt"),
        "kth_value": 0.8,
        "last_model_path": "",
        "best_k_models": {str(old / "epoch003.ckpt"): 0.9, str(old / "epoch001.ckpt"): 0.8},
        "monitor": "val/acc",
    }
    callback = ModelCheckpoint(dirpath=str(new), monitor="val/acc", mode="max")
    callback.load_state_dict(state)
    assert callback.best_model_path == str(new / "epoch003.ckpt")
    assert callback.best_model_score == 0.9
    assert callback.best_k_models == {str(new / "epoch003.ckpt"): 0.9}
    assert callback.kth_best_model_path == ""


def test_the_seams_into_omegaconf_and_lightning_read_what_they_claim(finished):
    """Two foreign formats are read in one place each: OmegaConf's interpolation grammar
    (which resolvers a value calls) and Lightning's checkpoint layout (epochs and steps
    done). A version that changes either fails here, not in a user's resume."""
    from visionlab.app.safety import _resolvers
    from visionlab.training.checkpoint import read_checkpoint, training_progress

    assert _resolvers("${a.b} and ${oc.env:X,${c}} ${visionlab.mul:${d},2}") == ["oc.env", "visionlab.mul"]
    assert _resolvers("${${a}:1}") == ["${a}"]
    last = read_checkpoint(finished / "checkpoints" / "last.ckpt")
    assert training_progress(last) == (1, 2)  # one epoch of 2 batches (TINY: 64 images less 32 for val, batches of 16)
    assert training_progress(read_checkpoint(finished / "checkpoints" / "restored_best.ckpt")) is None


def test_a_full_disk_ends_in_one_line_not_chained_tracebacks(tmp_path, monkeypatch):
    """ENOSPC from any writer (here run_info.json; error.txt cannot be written either) is the
    machine's state, not a bug: one line naming it, exit 2."""
    import errno

    import visionlab.app.cli as cli
    import visionlab.app.fit as train

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "run_info.json")

    monkeypatch.setattr(train, "record_run_info", full)
    monkeypatch.setattr(cli, "atomic_write", full)
    code, err = run_main(train_main, [*TINY, f"hydra.run.dir={tmp_path / 'new'}"])
    assert (code, err) == (2, "error: [Errno 28] No space left on device: 'run_info.json'\n")


def test_a_basic_sweep_into_a_folder_holding_a_sweep_is_refused(tmp_path):
    """Jobs 0, 1, ... of a second sweep would replace the first sweep's job folders."""
    from visionlab.app.cli import prepare_run
    from visionlab.utils.errors import ConfigError

    earlier = tmp_path / "sweep"
    (earlier / "0").mkdir(parents=True)
    (earlier / "multirun.yaml").write_text("hydra: {}\n")
    args = ["-m", "data=synthetic", "model=mlp,cnn", f"hydra.sweep.dir={earlier}"]
    with pytest.raises(ConfigError, match=rf"^hydra.sweep.dir={earlier} already holds a sweep \(multirun.yaml\)"):
        prepare_run("train", args)
    assert prepare_run("train", [*args[:-1], f"hydra.sweep.dir={tmp_path / 'new'}"])[0][0] == "-m"
