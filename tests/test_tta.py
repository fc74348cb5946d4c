"""The speed net (models/resnet9.py) through every entry point, and flip test-time
augmentation (task.tta=flip) checked against probabilities computed by hand: one tiny
training run shared by all tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from visionlab.app.config import compose_config
from visionlab.models.resnet9 import ResNet9
from visionlab.models.tta import tta_scores
from visionlab.training.checkpoint import METADATA_KEY, load_model, read_checkpoint

TEST_SIZE = 40
TINY = (
    "data=synthetic",
    "data.train_size=64",
    "data.val_size=16",
    f"data.test_size={TEST_SIZE}",
    "data.batch_size=32",
    "data.eval_batch_size=16",
    "model=resnet9",
    "model.widths=[4,8,8,8]",
    "task.tta=flip",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks=none",
    "logger=none",
    "test=true",
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    """(checkpoint, train()'s metrics) of a run folder as scripts/train.py leaves it."""
    from visionlab.app.fit import train

    folder = tmp_path_factory.mktemp("run")
    cfg = compose_config(list(TINY), folder)
    with open_dict(cfg):
        cfg.trainer.default_root_dir = str(folder)
    (folder / ".hydra").mkdir()
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    metrics = train(cfg)
    ckpt = next((folder / "checkpoints").glob("*.ckpt"))  # Lightning's name holds '=', which overrides refuse
    return ckpt.rename(ckpt.with_name("best.ckpt")), metrics


@pytest.fixture(scope="module")
def by_hand(run) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(test images, labels, probabilities): the mean of the net's softmax on each image and
    on its mirror, two separate forward passes."""
    from visionlab.app.runs import build_datamodule, load_run

    model, combined = load_run(compose_config([f"ckpt_path={run[0]}"], config_name="evaluate"))
    images, labels = build_datamodule(combined).splits["test"]
    with torch.no_grad():
        x = model.transform()(images)
        probs = (model.net(x).softmax(1) + model.net(x.flip(-1)).softmax(1)) / 2
    return images, labels, probs


@pytest.mark.parametrize(
    ("shape", "params", "macs"), [((1, 28, 28), 1_645_536, 68_647_936), ((3, 32, 32), 1_646_112, 95_259_136)]
)
def test_resnet9_output_shape_parameter_count_and_multiply_adds(shape, params, macs):
    net = ResNet9(shape, 10)
    assert net(torch.zeros(2, *shape)).shape == (2, 10)
    assert sum(p.numel() for p in net.parameters()) == params
    assert net.features(torch.zeros(1, *shape)).shape[2:] == (shape[1] // 8, shape[2] // 8)
    assert net.macs() == macs


@pytest.mark.parametrize(("shape", "kwargs"), [((1, 4, 4), {}), ((1, 28, 28), {"residual": [True]})])
def test_resnet9_refuses_what_it_cannot_build(shape, kwargs):
    with pytest.raises(ValueError, match="too small|one residual flag per stage"):
        ResNet9(shape, 10, **kwargs)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.residual=[true]", "has 1 flag.*expected one per stage: 3"),
        ("model.residual=[1,0,1]", "expected a list of true/false"),
        ("model.widths=[]", "non-empty list of positive integers"),
        ("task.tta=mirror", "expected one of none, flip"),
    ],
)
def test_bad_resnet9_and_tta_values_are_refused_before_any_data_is_read(override, message):
    from visionlab.app.config import validate
    from visionlab.utils.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        validate(compose_config(["model=resnet9", override]))


def test_flip_scores_are_the_log_of_the_mean_probabilities():
    net = ResNet9((1, 28, 28), 10, widths=[4, 8, 8, 8]).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        expected = (net(x).softmax(1) + net(x.flip(-1)).softmax(1)) / 2
        assert torch.allclose(tta_scores(net, x, "flip").softmax(1), expected, atol=1e-6)
        assert torch.equal(tta_scores(net, x, "none"), net(x))


def test_the_checkpoint_records_tta_and_the_test_step_applies_it(run, by_hand):
    ckpt, metrics = run
    assert read_checkpoint(ckpt)[METADATA_KEY]["tta"] == "flip"
    _, labels, probs = by_hand
    assert metrics["test/acc"] == pytest.approx(float((probs.argmax(1) == labels).float().mean()))
    assert metrics["test/loss"] == pytest.approx(float(torch.nn.functional.nll_loss(probs.log(), labels)), rel=1e-4)


def test_evaluate_averages_the_image_and_its_mirror(run, by_hand, tmp_path):
    from visionlab.entrypoints.evaluate import evaluate

    _, labels, probs = by_hand
    overall = evaluate(compose_config([f"ckpt_path={run[0]}"], tmp_path, config_name="evaluate"))
    assert overall["acc"] == pytest.approx(float((probs.argmax(1) == labels).float().mean()))
    assert overall["loss"] == pytest.approx(float(torch.nn.functional.nll_loss(probs.log(), labels)), rel=1e-4)


def test_predict_with_gradcam_api_and_serve_apply_the_checkpoints_tta(run, by_hand, tmp_path):
    import visionlab
    from visionlab.entrypoints.predict import predict
    from visionlab.serve.backends import TorchBackend

    ckpt = run[0]
    images, _, probs = by_hand
    rows = predict(
        compose_config([f"ckpt_path={ckpt}", "predict.from_test=4", "explain=gradcam"], tmp_path, config_name="predict")
    )
    assert [r["p1"] for r in rows] == pytest.approx(probs[:4].max(1).values.tolist(), abs=1e-5)
    assert len(list((tmp_path / "explain").glob("*.png"))) == 4
    assert torch.allclose(visionlab.load_model(ckpt).probabilities(images[:4].numpy()), probs[:4], atol=1e-5)
    backend = TorchBackend(compose_config([f"ckpt_path={ckpt}"], config_name="serve"))
    assert torch.allclose(backend.probabilities(images[:4]), probs[:4], atol=1e-5)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "state_dict"])
def test_resnet9_exports_with_its_tta_in_the_sidecar(run, by_hand, tmp_path, fmt):
    from visionlab.entrypoints.export import export
    from visionlab.serve.backends import OnnxBackend

    path = export(compose_config([f"ckpt_path={run[0]}", f"format={fmt}"], tmp_path, config_name="export"))
    assert json.loads(path.with_suffix(".json").read_text())["tta"] == "flip"
    if fmt == "onnx":  # serve's ONNX backend reads it there and applies it
        images, _, probs = by_hand
        assert torch.allclose(OnnxBackend(path).probabilities(images[:4]), probs[:4], atol=1e-5)
    if fmt == "state_dict":  # the safetensors file carries the metadata, tta included
        assert load_model(read_checkpoint(path), path).tta == "flip"
