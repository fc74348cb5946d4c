"""The learning-rate finder: files, a suggestion inside the searched range, and train.py
training with it."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from visionlab.app.config import ConfigError
from visionlab.utils.figures import DPI

SEARCH = (
    "trainer.limit_train_batches=null",
    "trainer.max_epochs=3",
    "tune.min_lr=1e-5",
    "tune.max_lr=0.5",
    "tune.num_training=30",
    "model=mlp",
    "model.hidden=[32]",
)


def test_lr_find_writes_both_files_and_suggests_inside_the_range(cfg_factory, tmp_path, capsys):
    from visionlab.entrypoints.lr_find import run

    suggestion = run(cfg_factory(*SEARCH))
    assert 1e-5 <= suggestion <= 0.5
    data = json.loads((tmp_path / "lr_find.json").read_text())
    assert data["suggestion"] == suggestion and data["suggestion"] in data["lr"]
    assert len(data["lr"]) == len(data["loss"]) == 30
    assert data["lr"] == sorted(data["lr"]) and 1e-5 <= data["lr"][0] and data["lr"][-1] <= 0.5
    with Image.open(tmp_path / "lr_find.png") as image:
        assert image.format == "PNG" and image.size == (int(5.5 * DPI), int(4.0 * DPI))
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"optimizer.lr={suggestion:.3g}"


def test_train_with_tune_lr_find_uses_and_records_the_suggestion(cfg_factory, tmp_path):
    from visionlab.app.fit import train

    cfg = cfg_factory(*SEARCH, "tune.lr_find=true", "trainer.max_epochs=3")
    train(cfg)
    found = json.loads((tmp_path / "lr_find.json").read_text())
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["lr_find"]["optimizer.lr"] == float(f"{found['suggestion']:.3g}") == cfg.optimizer.lr
    assert info["lr_find"]["configured_lr"] == 0.001


def test_bad_search_ranges_are_refused_in_one_line(cfg_factory):
    from visionlab.entrypoints.lr_find import run

    with pytest.raises(ConfigError, match=r"^tune.min_lr=0.1, tune.max_lr=0.01: expected 0 < min_lr < max_lr$"):
        run(cfg_factory("tune.min_lr=0.1", "tune.max_lr=0.01"))
    with pytest.raises(ConfigError, match=r"tried 2 learning rates, too few for a suggestion"):
        run(cfg_factory("tune.num_training=20"))  # FAST: 2 training batches
