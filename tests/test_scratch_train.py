"""scripts/scratch.py's comparison, on small fake Fashion-MNIST files in the real format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig

from visionlab.app.config import ConfigError, compose_config
from visionlab.data.formats.idx import write_idx
from visionlab.data.mnist import FASHION_MNIST
from visionlab.entrypoints.scratch import compare


def fake_fashion_mnist(folder: Path, n_train: int = 400, n_test: int = 100) -> None:
    """Learnable stand-ins: class k lights up row block k, over noise."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 120, (n, 28, 28))
        for i, k in enumerate(labels):
            images[i, 2 * k + 4 : 2 * k + 6] = 255
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f.name for f in FASHION_MNIST.files)


def scratch_config(tmp_path: Path, *overrides: str) -> DictConfig:
    return compose_config(
        [f"data.data_dir={tmp_path / 'data'}", "data.verify=false", f"paths.output_dir={tmp_path / 'run'}", *overrides],
        config_name="scratch",
    )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_by_hand_and_visionlab_agree_epoch_by_epoch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dtype: str
) -> None:
    (tmp_path / "data").mkdir()
    fake_fashion_mnist(tmp_path / "data")
    cfg = scratch_config(
        tmp_path,
        "model.hidden=[32,16]",
        "trainer.max_epochs=2",
        "data.batch_size=20",
        "optimizer.momentum=0.9",
        f"dtype={dtype}",
    )
    result = compare(cfg)
    assert len(result["by_hand"]) == len(result["visionlab"]) == 2
    assert result["max_gap_points"] <= 0.5
    if dtype == "float64":  # rounding differences stay far below what flips a prediction
        assert result["max_gap_points"] < 1e-4  # torchmetrics reports accuracy in float32
    assert result["by_hand"][-1]["test_acc"] > 0.5  # learned something (chance is 0.1)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == result
    assert "largest gap" in capsys.readouterr().out


@pytest.mark.parametrize(
    "override,message",
    [
        ("dtype=float16", "dtype='float16' is not allowed; expected one of float32, float64"),
        ("trainer.max_epochs=-1", "trainer.max_epochs=-1 is not allowed"),
        ("optimizer.lr=0", "optimizer.lr=0 is not allowed"),
        ("data.batch_size=0", "data.batch_size=0 is not allowed; expected an integer >= 1"),  # the DataModule's own
        ("model.activation=swish", "model.activation='swish' is not allowed"),  # MLP's own
        (
            "optimizer._target_=torch.optim.Adam",
            "optimizer._target_='torch.optim.Adam' is not allowed; expected torch.optim.SGD",
        ),
        (
            "data.augment.horizontal_flip=true",
            "data.augment.horizontal_flip=True: the by-hand side trains on the plain",
        ),
    ],
)
def test_bad_settings_fail_before_any_data_is_read(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compare(scratch_config(tmp_path, override))


def test_scratch_composes_trains_data_model_and_trainer_groups(tmp_path: Path) -> None:
    """One training path: the visionlab side is built from the groups train uses."""
    cfg = scratch_config(tmp_path)
    choices = cfg.hydra.runtime.choices
    assert (choices.data, choices.model, choices.trainer) == ("fashion_mnist", "mlp", "cpu")
    assert cfg.data._target_ == "visionlab.data.FashionMNISTDataModule" and cfg.trainer._target_ == "lightning.Trainer"
    assert (cfg.data.val_size, cfg.data.normalization, cfg.model.hidden) == (0, "scale", [300, 100])
