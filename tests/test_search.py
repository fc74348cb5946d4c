"""The Optuna search: its space, samplers and bookkeeping in-process with a stand-in launcher
(fast), then real searches through `scripts/train.py hparams_search=...`: pruning, the best
config trained again, a killed search continued, failed trials, and the dashboard."""

from __future__ import annotations

import csv
import json
import math
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from conftest import REPO
from visionlab.app import search
from visionlab.app.config import ConfigError

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {
    "optimizer": {"lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-1, "log": True}},
    "model.dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "trainer": {"max_epochs": {"type": "int", "low": 1, "high": 3}},
    "model": {"hidden": {"type": "categorical", "choices": [[16], [32, 16]]}},
}


def fake_launch(score, seen=None):
    """A launcher that 'trains' by scoring the overrides; records every batch it gets."""

    def launch(batch, first):
        if seen is not None:
            seen.extend((first + i, overrides) for i, overrides in enumerate(batch))
        return [score(dict(o.split("=", 1) for o in overrides)) for overrides in batch]

    return launch


def new_study(sampler="tpe", seed=0, space=SPACE, storage=None, name="s"):
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    study.sampler = search.make_sampler(sampler, seed, {}, search.parse_space(space))
    return study


def test_space_reads_float_log_int_and_categorical_nested_or_dotted():
    space = search.parse_space(SPACE)
    assert set(space) == {"optimizer.lr", "model.dropout", "trainer.max_epochs", "model.hidden"}
    assert space["optimizer.lr"].log and not space["model.dropout"].log
    assert isinstance(space["trainer.max_epochs"], optuna.distributions.IntDistribution)
    assert space["model.hidden"].choices == ("[16]", "[32,16]")  # lists as their override text


@pytest.mark.parametrize(
    "params, message",
    [
        (
            {"optimizer.lr": {"type": "float", "low": "1e-4", "high": 0.1}},
            "hydra.sweeper.params.optimizer.lr.low='1e-4' is not allowed; expected a number (YAML reads 1e-4 as text",
        ),
        (
            {"optimizer.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}},
            "hydra.sweeper.params.optimizer.lr: ",
        ),
        ({"optimizer.lr": {"type": "normal"}}, "hydra.sweeper.params.optimizer.lr={'type': 'normal'} is not allowed"),
        ({"model.hidden": {"type": "categorical", "choices": []}}, "model.hidden.choices=[] is not allowed"),
        ({}, "hydra.sweeper.params is empty"),
    ],
)
def test_a_bad_space_is_one_line_naming_the_key(params, message):
    with pytest.raises(ConfigError) as err:
        search.parse_space(params)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_samplers_by_name_and_unknown_names_refused():
    space = search.parse_space({"x": {"type": "categorical", "choices": [1, 2]}})
    assert isinstance(search.make_sampler("tpe", 0, {}, space), optuna.samplers.TPESampler)
    assert isinstance(search.make_sampler("random", 0, {}, space), optuna.samplers.RandomSampler)
    assert isinstance(search.make_sampler("cmaes", 0, {}, space), optuna.samplers.CmaEsSampler)
    assert isinstance(search.make_sampler("grid", 0, {}, space), optuna.samplers.GridSampler)
    with pytest.raises(ConfigError, match="sampler.name='bayes' is not allowed; expected one of tpe, random"):
        search.make_sampler("bayes", 0, {}, space)
    with pytest.raises(ConfigError, match="pruner.name='early' is not allowed"):
        search.make_pruner("early", {})
    with pytest.raises(ConfigError, match=r"sampler.options.random: .*unexpected keyword argument 'n_startup_trials'"):
        search.make_sampler("random", 0, {"random": {"n_startup_trials": 5}}, space)
    with pytest.raises(ConfigError, match="grid sampler needs categorical or int"):
        search.make_sampler("grid", 0, {}, search.parse_space(SPACE))


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes"])
def test_the_seed_gives_the_same_trials(sampler):
    def params_of(seed):
        study = new_study(sampler, seed)
        score = lambda o: search.Outcome(value=-abs(math.log10(float(o["optimizer.lr"])) + 2))  # noqa: E731
        search.run_search(study, search.parse_space(SPACE), 8, 2, ["data=synthetic"], fake_launch(score))
        return [t.params for t in study.trials]

    assert params_of(3) == params_of(3)
    assert params_of(3) != params_of(4)


def test_failures_are_recorded_with_their_reason_and_the_search_goes_on():
    def score(overrides):
        if overrides["model.hidden"] == "[16]":
            return search.Outcome(error=ConfigError("model.activation='swish' is not allowed; expected one of relu"))
        return search.Outcome(value=float("nan"))

    study, seen = new_study("random"), []
    search.run_search(study, search.parse_space(SPACE), 6, 1, ["model=mlp"], fake_launch(score, seen))
    assert len(study.trials) == 6 and all(t.state == TrialState.FAIL for t in study.trials)
    reasons = {t.user_attrs[search.REASON] for t in study.trials}
    assert reasons == {
        "ConfigError: model.activation='swish' is not allowed; expected one of relu",
        "the trial's metric is nan, not a finite number (NaN loss?)",
    }
    assert [n for n, _ in seen] == list(range(6))  # job number = trial number
    assert all(o[0] == "model=mlp" for _, o in seen)
    assert search.write_best(study, Path("/nonexistent"), "val/acc") is None  # nothing completed


def test_an_interrupted_trial_is_marked_failed_and_retried(tmp_path):
    storage = f"sqlite:///{tmp_path}/study.db"
    study = new_study("random", storage=storage)
    score = lambda o: search.Outcome(value=float(o["model.dropout"]))  # noqa: E731
    search.run_search(study, search.parse_space(SPACE), 2, 1, [], fake_launch(score))
    killed = study.ask(search.parse_space(SPACE))  # the search died while this one ran
    (tmp_path / str(killed.number)).mkdir()

    study = new_study("random", seed=1, storage=storage)
    assert search.recover_interrupted(study, tmp_path) == 1
    seen = []
    search.run_search(study, search.parse_space(SPACE), 4, 1, [], fake_launch(score, seen))
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE] * 2 + [TrialState.FAIL] + [TrialState.COMPLETE] * 2
    assert study.trials[2].user_attrs[search.REASON].startswith("interrupted")
    assert study.trials[3].params == study.trials[2].params  # retried first
    assert [n for n, _ in seen] == [3, 4]  # finished trials not run again
    assert "interrupted" in (tmp_path / "2" / "error.txt").read_text()


def test_the_grid_sampler_stops_at_the_grid_size():
    space = {"x": {"type": "int", "low": 1, "high": 3}, "y": {"type": "categorical", "choices": ["a", "b"]}}
    study, seen = new_study("grid", space=space), []
    search.run_search(
        study, search.parse_space(space), 6, 1, [], fake_launch(lambda o: search.Outcome(value=1.0), seen)
    )
    assert sorted((p["x"], p["y"]) for p in (t.params for t in study.trials)) == [
        (x, y) for x in (1, 2, 3) for y in ("a", "b")
    ]


# --- real searches through scripts/train.py --------------------------------------------

TINY = (
    "data=synthetic",
    "trainer.limit_train_batches=8",
    "trainer.num_sanity_val_steps=0",
    "callbacks=none",
    "logger=csv",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.enable_checkpointing=false",
    "test=false",
    "data.train_size=256",
    "data.test_size=32",
    "~hydra.sweeper.params.optimizer",
    "~hydra.sweeper.params.model",
    "~hydra.sweeper.params.data",
)


def search_command(tmp_path, *args):
    return [
        sys.executable,
        str(REPO / "scripts" / "train.py"),
        "hparams_search=optuna_mlp",
        *TINY,
        f"paths.log_dir={tmp_path}",
        *args,
    ]


def load(tmp_path, name="mlp"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/search/{name}/optuna.db")


def completed(db):
    """COMPLETE trials in the study file, read with sqlite3 alone: Optuna's storage would try
    to create the tables the running search may be creating."""
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as con:
            return con.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:  # no file or tables yet, or locked for a moment
        return 0


def run(command, cwd):
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.mark.slow
def test_a_search_prunes_a_bad_learning_rate_and_its_best_config_trains_again(tmp_path):
    lrs = "+hydra.sweeper.params.optimizer.lr={type:categorical,choices:[0.01,1.0e-7]}"
    done = run(
        search_command(
            tmp_path,
            lrs,
            "trainer.max_epochs=3",
            "hydra.sweeper.n_trials=4",
            "hydra.sweeper.sampler.name=random",
            "hydra.sweeper.pruner.options.median.n_startup_trials=1",
        ),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    study, sweep = load(tmp_path), tmp_path / "search" / "mlp"
    lr = [t.params["optimizer.lr"] for t in study.trials]
    assert 0.01 in lr[:-1] and 1e-7 in lr[lr.index(0.01) + 1 :], f"this seed draws no bad lr after a good one: {lr}"
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and all(t.params["optimizer.lr"] == 1e-7 for t in pruned)
    for t in pruned:  # stopped early: fewer epochs reported and trained
        assert len(t.intermediate_values) < 3
        with (sweep / str(t.number) / "csv" / "metrics.csv").open() as f:
            assert max(int(r["epoch"]) for r in csv.DictReader(f) if r["epoch"]) < 2
    assert all(t.state == TrialState.COMPLETE for t in study.trials if t.params["optimizer.lr"] == 0.01)
    with (sweep / "report.csv").open() as f:
        assert {r["run"] for r in csv.DictReader(f)} == {"0", "1", "2", "3"}  # the report covers every trial

    best = study.best_trial
    again = run(
        [sys.executable, str(REPO / "scripts" / "train.py"), "--config-dir", str(sweep), "--config-name", "best"],
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    metrics = json.loads(next((tmp_path / "runs").glob("*/*/metrics.json")).read_text())
    assert metrics["val/acc"] == pytest.approx(best.value)
    results = yaml.safe_load((sweep / search.RESULTS_FILE).read_text())
    assert results["best_trial"] == best.number and results["states"]["PRUNED"] == len(pruned)


@pytest.mark.slow
def test_a_killed_search_continues_without_running_finished_trials_again(tmp_path):
    command = search_command(
        tmp_path,
        "+hydra.sweeper.params.model.dropout={type:float,low:0.0,high:0.5}",
        "trainer.max_epochs=2",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.pruner.name=none",
    )
    first = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = tmp_path / "search" / "mlp" / "optuna.db"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and first.poll() is None:
            if completed(db) >= 2:
                break
            time.sleep(0.2)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    before = {t.number: t.datetime_complete for t in load(tmp_path).trials if t.state == TrialState.COMPLETE}
    assert len(before) >= 2 and len(before) < 4, "the search finished before it was killed"

    again = run(command, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = load(tmp_path).trials
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(finished) == 4
    assert {t.number: t.datetime_complete for t in finished if t.number in before} == before  # not run again
    for t in trials:
        if t.state == TrialState.FAIL:  # killed while running: failed, its parameters (if drawn) tried again
            assert t.user_attrs[search.REASON].startswith("interrupted")
            assert not t.params or any(u.params == t.params for u in finished if u.number > t.number)
    assert len(trials) == 4 + sum(t.state == TrialState.FAIL for t in trials)


@pytest.mark.slow
def test_a_trial_with_a_bad_value_fails_with_its_reason_and_the_search_goes_on(tmp_path):
    activations = "+hydra.sweeper.params.model.activation={type:categorical,choices:[relu,swish]}"
    done = run(
        search_command(
            tmp_path, activations, "trainer.max_epochs=1", "hydra.sweeper.n_trials=5", "hydra.sweeper.sampler.name=grid"
        ),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    trials = {t.params["model.activation"]: t for t in load(tmp_path).trials}
    assert len(load(tmp_path).trials) == 2  # the grid holds two points
    assert trials["relu"].state == TrialState.COMPLETE and trials["swish"].state == TrialState.FAIL
    assert (
        trials["swish"]
        .user_attrs[search.REASON]
        .startswith("ConfigError: model.activation='swish' is not allowed; expected one of")
    )
    sweep = tmp_path / "search" / "mlp"
    with (sweep / "report.csv").open() as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    assert rows[str(trials["swish"].number)]["status"] == "failed"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_dashboard_answers_for_the_study(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = new_study("random", storage=storage, name="mlp")
    search.run_search(study, search.parse_space(SPACE), 2, 1, [], fake_launch(lambda o: search.Outcome(value=0.5)))
    port = free_port()
    dashboard = Path(sys.executable).with_name("optuna-dashboard")
    server = subprocess.Popen(
        [str(dashboard), storage, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, answer = time.monotonic() + 30, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study._study_id}", timeout=2) as r:
                    answer = (r.status, json.loads(r.read()))
                break
            except OSError:
                time.sleep(0.2)
        assert answer is not None, "the dashboard did not answer within 30 s"
        status, body = answer
        assert status == 200 and body["name"] == "mlp" and len(body["trials"]) == 2
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.slow
def test_a_bad_search_setting_is_one_line_before_any_trial(tmp_path):
    done = run(
        search_command(
            tmp_path,
            "+hydra.sweeper.params.model.dropout={type:float,low:0.0,high:0.5}",
            "hydra.sweeper.sampler.name=bayes",
        ),
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert (
        done.stderr.strip().splitlines()[-1]
        == "error: hydra.sweeper.sampler.name='bayes' is not allowed; expected one of tpe, random, cmaes, grid"
    )
    assert not [p for p in (tmp_path / "search" / "mlp").iterdir() if p.is_dir()]  # no trial folder
