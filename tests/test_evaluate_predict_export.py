"""evaluate, predict and export on a checkpoint trained for a few batches on tiny synthetic
data, through the entry-point functions (and the CLI for the one-line errors)."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image

from conftest import TINY_RUN as TINY
from conftest import TINY_TEST_SIZE as TEST_SIZE
from visionlab.app.config import compose_config
from visionlab.training.checkpoint import METADATA_KEY, CheckpointError, read_checkpoint


def make_cfg(name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """The config the entry point `name` would compose, writing into `output_dir`."""
    return compose_config(overrides, output_dir, config_name=name)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained run folder laid out as scripts/train.py leaves it."""
    from visionlab.app.fit import train

    run = tmp_path_factory.mktemp("run")
    cfg = make_cfg("train", list(TINY), run)
    with open_dict(cfg):
        cfg.trainer.default_root_dir = str(run)
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    train(cfg)
    return run


def best_ckpt(run: Path) -> Path:
    return next(p for p in (run / "checkpoints").glob("epoch*.ckpt"))


def test_training_writes_history_and_a_self_describing_weights_only_checkpoint(run_dir):
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert all(float(r[k]) >= 0 for r in rows for k in ("train_loss", "val_acc", "lr", "epoch_seconds"))
    assert (run_dir / "history.png").stat().st_size > 0
    checkpoint = read_checkpoint(best_ckpt(run_dir))
    assert "optimizer_states" not in checkpoint  # save_weights_only
    meta = checkpoint[METADATA_KEY]
    assert meta["classes"] == [f"class_{i}" for i in range(10)] and meta["input_shape"] == [1, 28, 28]
    assert meta["model"]["_target_"] == "visionlab.models.CNN" and meta["model"]["channels"] == [4, 8]
    assert len(meta["mean"]) == len(meta["std"]) == 1


def test_evaluate_writes_metrics_per_class_and_confusion_matrix(run_dir, tmp_path, capsys):
    from visionlab.entrypoints.evaluate import evaluate

    overall = evaluate(make_cfg("evaluate", [f"ckpt_path={best_ckpt(run_dir)}"], tmp_path))
    confusion = np.loadtxt(
        tmp_path / "confusion_matrix.csv", delimiter=",", skiprows=1, usecols=range(1, 11), dtype=np.int64
    )
    assert confusion.sum() == TEST_SIZE
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["size"] == TEST_SIZE and metrics["split"] == "test"
    assert metrics["acc"] == pytest.approx(np.trace(confusion) / TEST_SIZE) == pytest.approx(overall["acc"])
    with open(tmp_path / "per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == [f"class_{i}" for i in range(10)]
    assert [int(r["support"]) for r in rows] == confusion.sum(1).tolist()
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0
    assert 0 <= metrics["ece"] <= 1
    assert all(
        (tmp_path / f).read_bytes()[:4] == b"\x89PNG" for f in ("mistakes.png", "per_class.png", "reliability.png")
    )
    assert "class_9" in capsys.readouterr().out


def test_predict_files_converts_images_and_skips_bad_ones(run_dir, tmp_path, capsys):
    from visionlab.entrypoints.predict import predict

    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(folder / "rgb.png")
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(folder / "gray.jpg")
    (folder / "notes.png").write_text("not an image")
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((200, 200), dtype=np.uint8)).save(big)
    cfg = make_cfg(
        "predict",
        [f"ckpt_path={best_ckpt(run_dir)}", f"inputs=[{folder},{big}]", "predict.top_k=2", "predict.max_pixels=10000"],
        tmp_path,
    )
    rows = predict(cfg)
    assert [Path(r["input"]).name for r in rows] == ["gray.jpg", "rgb.png"]
    assert all(r["p1"] >= r["p2"] and r["top1"].startswith("class_") for r in rows)
    err = capsys.readouterr().err
    assert f"{folder / 'notes.png'}: not an image" in err
    assert f"{big}: too large to decode safely" in err
    with open(tmp_path / "predictions.csv") as f:
        assert [r["top1"] for r in csv.DictReader(f)] == [r["top1"] for r in rows]


def test_predict_from_test_names_the_true_classes(run_dir, tmp_path):
    from visionlab.data import SyntheticDataModule
    from visionlab.entrypoints.predict import predict

    rows = predict(make_cfg("predict", [f"ckpt_path={best_ckpt(run_dir)}", "predict.from_test=5"], tmp_path))
    labels = SyntheticDataModule(val_size=32, test_size=TEST_SIZE).read_split("test")[1][:5]
    assert [r["true"] for r in rows] == [f"class_{int(y)}" for y in labels]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "state_dict"])
def test_export_matches_pytorch_and_describes_itself(fmt, run_dir, tmp_path):
    from visionlab.entrypoints.export import export

    ckpt = tmp_path / "moved.ckpt"  # away from its run folder: the checkpoint metadata must suffice
    shutil.copy(best_ckpt(run_dir), ckpt)
    path = export(make_cfg("export", [f"ckpt_path={ckpt}", f"format={fmt}"], tmp_path))
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["classes"][0] == "class_0" and info["input"]["shape"] == ["batch", 1, 28, 28]
    assert len(info["normalization"]["mean"]) == 1
    reference = read_checkpoint(ckpt)
    from visionlab.training.checkpoint import load_model

    net = load_model(reference, ckpt).net
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        expected = net(x).numpy()
    if fmt == "onnx":
        import onnxruntime as ort

        got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    elif fmt == "torchscript":
        np.testing.assert_allclose(torch.jit.load(str(path))(x).detach().numpy(), expected, atol=1e-4, rtol=0)
    else:  # the safetensors file is itself loadable, metadata included
        np.testing.assert_array_equal(load_model(read_checkpoint(path), path).net(x).detach().numpy(), expected)


def test_bad_checkpoints_get_one_line_errors(run_dir, tmp_path):
    truncated, text = tmp_path / "truncated.ckpt", tmp_path / "text.ckpt"
    truncated.write_bytes(best_ckpt(run_dir).read_bytes()[:5000])
    text.write_text("hello")
    with pytest.raises(CheckpointError, match=rf"{truncated}: cannot load: truncated or corrupt"):
        read_checkpoint(truncated)
    with pytest.raises(CheckpointError, match=rf"{text}: cannot load: not a PyTorch checkpoint"):
        read_checkpoint(text)
    code = tmp_path / "code.ckpt"
    torch.save({"state_dict": {}, "path": PurePosixPath("/")}, code)  # unpickling it would need code
    with pytest.raises(
        CheckpointError, match=r"refused: the file holds pathlib.PurePosixPath, which would run code when loaded"
    ):
        read_checkpoint(code)
    from visionlab.app.runs import load_run

    cfg = make_cfg("evaluate", [f"ckpt_path={best_ckpt(run_dir)}", "model=mlp"], tmp_path)
    with pytest.raises(CheckpointError, match=r"weights do not fit MLP \(another architecture\?\): missing 6"):
        load_run(cfg)


def test_cli_reports_a_corrupt_checkpoint_in_one_line(run_dir, tmp_path, monkeypatch, capsys):
    from visionlab.entrypoints.evaluate import main

    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(best_ckpt(run_dir).read_bytes()[:-100])
    monkeypatch.setattr(sys, "argv", ["evaluate.py", f"ckpt_path={bad}", f"hydra.run.dir={tmp_path / 'out'}"])
    GlobalHydra.instance().clear()
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: ckpt_path={bad}: cannot load: truncated or corrupt")


def test_a_checkpoint_without_metadata_is_rebuilt_from_its_run_folder(run_dir, tmp_path):
    from visionlab.app.runs import load_run

    checkpoint = torch.load(best_ckpt(run_dir), weights_only=True)
    del checkpoint[METADATA_KEY]
    old = run_dir / "checkpoints" / "old.ckpt"
    torch.save(checkpoint, old)
    model, _ = load_run(make_cfg("predict", [f"ckpt_path={old}"], tmp_path))
    assert model.classes[0] == "class_0" and model.model_config["channels"] == [4, 8] and len(model.mean) == 1
    moved = tmp_path / "old.ckpt"
    shutil.copy(old, moved)
    with pytest.raises(CheckpointError, match=r"does not say its model, classes, input_shape, mean, std"):
        load_run(make_cfg("predict", [f"ckpt_path={moved}"], tmp_path))


def test_a_run_folder_of_the_flat_layout_still_evaluates(run_dir, tmp_path):
    """Run folders written before training/, app/ and utils/ existed name visionlab.task,
    visionlab.callbacks, ... in .hydra/config.yaml. Those modules are gone (no shims);
    evaluate reads only the run's data and model groups, whose paths did not move."""
    import importlib

    from visionlab.entrypoints.evaluate import evaluate

    old_run = tmp_path / "old_run"
    shutil.copytree(run_dir, old_run, ignore=shutil.ignore_patterns("tensorboard", "csv"))
    saved = old_run / ".hydra" / "config.yaml"
    flat = saved.read_text().replace("visionlab.training.", "visionlab.").replace("visionlab.utils.", "visionlab.")
    assert "_target_: visionlab.task.ClassifierTask" in flat and "visionlab.callbacks.ModelCheckpoint" in flat
    saved.write_text(flat)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("visionlab.task")
    checkpoint = torch.load(best_ckpt(old_run), weights_only=True)
    del checkpoint[METADATA_KEY]  # so the net and its data come from the old config
    torch.save(checkpoint, old_run / "checkpoints" / "flat.ckpt")
    old = evaluate(make_cfg("evaluate", [f"ckpt_path={old_run / 'checkpoints' / 'flat.ckpt'}"], tmp_path / "a"))
    new = evaluate(make_cfg("evaluate", [f"ckpt_path={best_ckpt(run_dir)}"], tmp_path / "b"))
    assert old["acc"] == pytest.approx(new["acc"]) and old["loss"] == pytest.approx(new["loss"])


def test_evaluate_on_val_refuses_a_val_split_the_run_trained_on(run_dir, tmp_path):
    """Issue 25: split=val with another val_size held out other images, some of them trained on."""
    from visionlab.app.config import ConfigError
    from visionlab.entrypoints.evaluate import evaluate

    ckpt = f"ckpt_path={best_ckpt(run_dir)}"
    with pytest.raises(
        ConfigError,
        match=r"^split=val with data.val_size=100: the run held out its val split with "
        r"data.val_size=32, so this one would hold images it trained on",
    ):
        evaluate(make_cfg("evaluate", [ckpt, "split=val", "+data.val_size=100"], tmp_path / "bad"))
    assert not (tmp_path / "bad").exists()
    assert evaluate(make_cfg("evaluate", [ckpt, "split=val", "+data.eval_batch_size=8"], tmp_path / "ok"))["acc"] >= 0
