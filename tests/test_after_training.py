"""The user's path after training, on runs started with an override of each config group
(issue 13): evaluate, predict and export through their command-line mains, continuing a
finished run, and the Python API. Every run is tiny and synthetic."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_main, tree_hash
from visionlab.entrypoints import evaluate, export, predict
from visionlab.entrypoints.train import main as train_main

TINY = [
    "data=synthetic",
    "data.train_size=120",
    "data.val_size=40",
    "data.test_size=40",
    "data.batch_size=20",
    "data.eval_batch_size=16",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "trainer.accelerator=cpu",
    "logger=csv",
    "callbacks.progress_bar.refresh_rate=0",
    "trainer.enable_model_summary=false",
]
SMALL_CNN = ["model.channels=[4,8]", "model.dense=[16]"]
# One run per config group overridden (and the default), as users start them.
MATRIX = {
    "default": SMALL_CNN,
    "model": ["model=mlp", "model.hidden=[32]"],
    "optimizer": [*SMALL_CNN, "optimizer=sgd"],
    "scheduler": [*SMALL_CNN, "scheduler=step"],
    "data": [*SMALL_CNN, "data.input_shape=[3,16,16]", "data.normalization=scale", "data.loader=dataloader"],
    "task": [*SMALL_CNN, "task.l2=1e-4", "task.label_smoothing=0.1"],
    "callbacks": [
        *SMALL_CNN,
        "callbacks.model_checkpoint.save_best_only=false",
        "callbacks.early_stopping.restore_best_weights=false",
    ],
    "trainer": [*SMALL_CNN, "trainer=cpu"],
    "experiment": ["experiment=notes_mlp", "model.hidden=[32]", "data.val_size=40", "data.batch_size=20"],
}


# ONNX export takes seconds per net; the nets differ only by model and data shape, so the
# export is checked on the runs whose nets differ: a CNN, an MLP and an RGB input.
EXPORTED = ("default", "model", "data")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """group -> its trained run folder, trained on first use."""
    root, done = tmp_path_factory.mktemp("matrix"), {}

    def get(group: str) -> Path:
        if group not in done:
            run = root / group
            code, err = run_main(train_main, [*TINY, *MATRIX[group], f"hydra.run.dir={run}"])
            assert code == 0, err
            done[group] = run
        return done[group]

    return get


def logged_val(run: Path, epoch: int) -> dict[str, float]:
    """The val/* metrics training logged for `epoch` (0-based), from csv/metrics.csv."""
    with open(run / "csv" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/acc") and int(float(r["epoch"])) == epoch]
    assert len(rows) == 1
    return {k.removeprefix("val/"): float(v) for k, v in rows[0].items() if k.startswith("val/")}


def evaluated(run: Path, ckpt: Path, split: str, out: Path) -> dict[str, float]:
    code, err = run_main(evaluate.main, [f"ckpt_path={ckpt}", f"split={split}", f"hydra.run.dir={out}"])
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k in ("acc", "loss", "precision", "recall", "f1", "auroc")}


@pytest.mark.parametrize("group", list(MATRIX))
def test_evaluate_predict_export_work_on_a_run_of_each_group_and_leave_it_untouched(group, runs, tmp_path):
    import onnxruntime as ort

    run = runs(group)
    before = tree_hash(run)
    final = json.loads((run / "metrics.json").read_text())
    # eval reproduces training's own test of the checkpoint it tested, exactly
    tested = Path(final["test/ckpt_path"])
    assert evaluated(run, tested, "test", tmp_path / "e0") == {
        k[5:]: v for k, v in final.items() if k.startswith("test/") and k != "test/ckpt_path"
    }
    # the best and last checkpoints give the val metrics logged at their epochs
    for i, ckpt in enumerate([*sorted((run / "checkpoints").glob("epoch*.ckpt")), run / "checkpoints" / "last.ckpt"]):
        epoch = torch.load(ckpt, map_location="cpu", weights_only=True)["epoch"]
        assert evaluated(run, ckpt, "val", tmp_path / f"e{i + 1}") == logged_val(run, epoch)
    code, err = run_main(
        predict.main,
        [f"ckpt_path={run}/checkpoints/last.ckpt", "predict.from_test=4", f"hydra.run.dir={tmp_path / 'p'}"],
    )
    assert code == 0, err
    with open(tmp_path / "p" / "predictions.csv") as f:
        assert all(r["top1"].startswith("class_") and r["true"].startswith("class_") for r in csv.DictReader(f))
    if group in EXPORTED:
        code, err = run_main(
            export.main, [f"ckpt_path={run}/checkpoints/last.ckpt", "format=onnx", f"hydra.run.dir={tmp_path / 'x'}"]
        )
        assert code == 0, err
        import visionlab

        model = visionlab.load_model(run / "checkpoints" / "last.ckpt")
        x = model.loaded.transform()(torch.randint(0, 256, (3, *model.loaded.input_shape), dtype=torch.uint8))
        onnx_out = ort.InferenceSession(str(tmp_path / "x" / "model.onnx")).run(None, {"images": x.numpy()})[0]
        with torch.no_grad():
            assert np.abs(onnx_out - model.net(x).numpy()).max() < 1e-4
    assert tree_hash(run) == before


@pytest.mark.parametrize("scheduler", ["none", "step"])
def test_a_finished_run_continued_ends_like_a_run_trained_that_long_from_the_start(scheduler, tmp_path):
    common = [
        *TINY,
        *SMALL_CNN,
        f"scheduler={scheduler}",
        "trainer.deterministic=true",
        "test=false",
        *(["scheduler.factory.step_size=1"] if scheduler == "step" else []),
    ]
    short, long = tmp_path / "short", tmp_path / "long"
    assert run_main(train_main, [*common, "trainer.max_epochs=1", f"hydra.run.dir={short}"])[0] == 0
    code, err = run_main(train_main, [f"ckpt_path={short}/checkpoints/last.ckpt", "trainer.max_epochs=3"])
    assert code == 0, err
    assert run_main(train_main, [*common, "trainer.max_epochs=3", f"hydra.run.dir={long}"])[0] == 0

    def net(run: Path) -> dict[str, torch.Tensor]:
        state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
        return {k: v for k, v in state.items() if k.startswith("net.")}

    a, b = net(short), net(long)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with open(short / "history.csv") as f:
        history = list(csv.DictReader(f))
    assert [r["epoch"] for r in history] == ["0", "1", "2"]
    with open(long / "history.csv") as f:
        assert [r["val_acc"] for r in history] == [r["val_acc"] for r in csv.DictReader(f)]


def test_the_python_api_trains_predicts_and_evaluates_in_process(runs, tmp_path, monkeypatch):
    import visionlab

    monkeypatch.setenv("VISIONLAB_ROOT", str(tmp_path))  # outputs/ of the API's evaluate
    metrics = visionlab.train(
        [*TINY, *SMALL_CNN, "trainer.max_epochs=1", "test=false", f"hydra.run.dir={tmp_path / 'api'}"]
    )
    assert 0 <= metrics["val/acc"] <= 1 and math.isfinite(metrics["train/loss"])
    assert (tmp_path / "api" / ".hydra" / "config.yaml").is_file() and (tmp_path / "api" / "train.log").is_file()
    model = visionlab.load_model(runs("data") / "checkpoints" / "last.ckpt")  # RGB 16x16
    rgb = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    answers = [
        model.predict(tmp_path / "x.png"),
        model.predict(rgb),
        model.predict(Image.open(tmp_path / "x.png")),
        model.predict(torch.from_numpy(rgb).permute(2, 0, 1)),
    ]
    assert all(a == answers[0] for a in answers)
    assert answers[0][0]["class"] in model.classes and len(answers[0][0]["top"]) == 3
    assert len(model.predict([rgb, rgb, tmp_path / "x.png"])) == 3
    final = json.loads((runs("data") / "metrics.json").read_text())
    if final["test/ckpt_path"].endswith("last.ckpt"):
        assert model.evaluate("test")["acc"] == final["test/acc"]
    assert set(model.evaluate("val")) >= {"acc", "loss", "f1", "auroc"}
    assert visionlab.ClassifierTask.__name__ == "ClassifierTask"


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["+trainer.reload_dataloaders_every_n_epochs=-1"],  # Lightning's own check
            "error: `reload_dataloaders_every_n_epochs` should be an int >= 0, got -1.",
        ),
        (
            [
                "+trainer.gradient_clip_val=1",
                "+trainer.gradient_clip_algorithm=bogus",
            ],  # visionlab's, before Hydra starts
            "error: trainer.gradient_clip_algorithm='bogus' is not allowed; expected one of norm, value",
        ),
        (["trainer.nope=1"], "error: Could not override 'trainer.nope'."),  # Hydra's own check
    ],
)
def test_lightning_and_hydra_errors_on_bad_flags_come_as_one_line(args, message, tmp_path):
    code, err = run_main(train_main, [*TINY, *args, f"hydra.run.dir={tmp_path / 'run'}"])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and lines[-1].startswith(message), err[-2000:]
    assert "Traceback" not in err
