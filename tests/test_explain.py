"""Grad-CAM and saliency maps: they point where the class evidence is, on hand-built nets,
the CNN and a torchvision backbone, and through predict explain=gradcam."""

from __future__ import annotations

import sys

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from PIL import Image
from torch import nn

from test_evaluate_predict_export import best_ckpt, make_cfg, run_dir  # noqa: F401  (run_dir: the fixture)
from visionlab.app.config import ConfigError
from visionlab.models import CNN
from visionlab.models.backbones import Backbone
from visionlab.utils.explain import explain, find_layer, heat_maps

SIDE = 16


class TopLeftOnly(nn.Module):
    """Class 0's score is the (positive) conv evidence of the top-left quarter only; class 1
    is its negative. Nothing outside that quarter reaches the scores."""

    def __init__(self, conv: bool = True) -> None:
        super().__init__()
        mask = torch.zeros(1, 1, SIDE, SIDE)
        mask[..., : SIDE // 2, : SIDE // 2] = 1
        self.register_buffer("mask", mask)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.ReLU()) if conv else nn.Identity()
        if conv:
            nn.init.uniform_(self.features[0].weight, 0.1, 1.0)
        self.head = nn.Linear(4 if conv else 1, 2, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[1.0], [-1.0]]).expand(2, self.head.in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x * self.mask)
        return self.head(features.flatten(2).mean(2) if features.ndim == 4 else features.flatten(1).mean(1, True))


def quarter_share(maps: torch.Tensor) -> torch.Tensor:
    """Per map, the share of its mass in the top-left quarter."""
    return maps[:, : SIDE // 2, : SIDE // 2].sum((1, 2)) / maps.sum((1, 2))


@pytest.mark.parametrize("conv", [True, False], ids=["gradcam", "saliency"])
def test_the_heat_lies_where_the_class_evidence_is(conv):
    net = TopLeftOnly(conv)
    x = torch.rand(4, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(0)) + 0.1
    layer = find_layer(net, x)
    assert (layer is not None) == conv
    maps = heat_maps(net, x, torch.zeros(4, dtype=torch.long), layer[1] if layer else None)
    assert maps.shape == (4, SIDE, SIDE) and float(maps.min()) >= 0 and float(maps.amax()) == pytest.approx(1)
    assert bool((quarter_share(maps) > 0.85).all())  # a uniform map would put 0.25 there
    outside = maps.clone()
    outside[:, : SIDE // 2 + 1, : SIDE // 2 + 1] = 0  # the quarter and the 3x3 conv's one-pixel spill
    assert float(outside.abs().max()) == 0


def test_the_layer_is_the_last_spatial_conv_or_the_one_named():
    cnn = CNN((1, 28, 28), 10, channels=[4, 8], dense=[16])
    x = torch.zeros(2, 1, 28, 28)
    assert find_layer(cnn, x)[0] == "features.4"
    assert find_layer(cnn, x, "features.0")[0] == "features.0"
    with pytest.raises(
        ConfigError,
        match=r"^explain_layer='features.9' is not a layer of CNN; "
        r"its conv layers: features.0, features.4$",
    ):
        find_layer(cnn, x, "features.9")
    resnet = Backbone((1, 28, 28), 3, name="resnet18")  # 32x32 inside: its last convs are 1x1
    name, _ = find_layer(resnet, x)
    assert name.startswith("backbone.layer3.")
    maps = heat_maps(resnet, torch.randn(2, 1, 28, 28), torch.tensor([0, 2]), resnet.get_submodule(name))
    assert maps.shape == (2, 28, 28)


def test_explain_writes_one_overlay_per_input(tmp_path):
    cnn = CNN((3, 20, 20), 4, channels=[4], dense=[])
    images = torch.randint(0, 256, (3, 3, 20, 20), dtype=torch.uint8)
    paths = explain(
        cnn,
        images,
        images.float() / 255,
        ["a/cat.png", "b/dog.jpg", "test[7]"],
        torch.tensor([0, 1, 2]),
        ("w", "x", "y", "z"),
        tmp_path,
        true=torch.tensor([3, 1, 0]),
    )
    assert [p.name for p in paths] == ["0000_cat.png", "0001_dog.png", "0002_test_7.png"]
    with Image.open(paths[0]) as image:
        assert image.size == (660, 250)  # three panels: input, predicted, true


def test_predict_explain_gradcam_on_a_trained_checkpoint(run_dir, tmp_path):  # noqa: F811 - the imported fixture
    from visionlab.entrypoints.predict import predict

    cfg = make_cfg("predict", [f"ckpt_path={best_ckpt(run_dir)}", "predict.from_test=3", "explain=gradcam"], tmp_path)
    rows = predict(cfg)
    files = sorted((tmp_path / "explain").iterdir())
    assert [f.name for f in files] == ["0000_test_0.png", "0001_test_1.png", "0002_test_2.png"] and len(rows) == 3
    with Image.open(files[0]) as image:
        assert image.size == (660, 250)  # input, predicted class, true class


def test_an_unknown_layer_is_refused_in_one_line(run_dir, tmp_path, monkeypatch, capsys):  # noqa: F811 - the fixture
    from visionlab.entrypoints.predict import main

    monkeypatch.setattr(
        sys,
        "argv",
        [
            "predict.py",
            f"ckpt_path={best_ckpt(run_dir)}",
            "predict.from_test=1",
            "explain=gradcam",
            "explain_layer=features.9",
            f"hydra.run.dir={tmp_path}",
        ],
    )
    GlobalHydra.instance().clear()
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: explain_layer='features.9' is not a layer of CNN; its conv layers: features.0, features.4"
    )
