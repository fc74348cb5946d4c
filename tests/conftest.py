"""Shared fixtures: composing the real Hydra config with test overrides."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from visionlab.app.config import CONF_DIR, compose_config

REPO = CONF_DIR.parent
FMNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")

# The tests are many tiny runs; more threads than cores only adds contention. `make test`
# runs two pytest workers (pytest-xdist), one per core of the 2-core machines: one thread each.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))

# Small and quick: synthetic data, few batches, nothing written but into tmp_path.
FAST = (
    "data=synthetic",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks=none",
    "trainer.enable_checkpointing=false",
    "logger=none",
    "test=false",
)


# A tiny CNN trained for real (2 epochs, default callbacks, weights-only checkpoints): the
# checkpoint that the evaluate/predict/export and serve tests load.
TINY_TEST_SIZE = 60
TINY_RUN = (
    "data=synthetic",
    "data.train_size=160",
    "data.val_size=32",
    f"data.test_size={TINY_TEST_SIZE}",
    "data.batch_size=32",
    "model.channels=[4,8]",
    "model.dense=[16]",
    "trainer.max_epochs=2",
    "trainer.accelerator=cpu",
    "logger=none",
    "~callbacks.lr_monitor",
    "test=false",
    "callbacks.progress_bar.refresh_rate=0",
    "callbacks.model_checkpoint.save_weights_only=true",
)


@pytest.fixture
def cfg_factory(tmp_path: Path) -> Callable[..., DictConfig]:
    """compose_config with the FAST overrides and output under tmp_path."""

    def make(*overrides: str, fast: bool = True) -> DictConfig:
        return compose_config([*(FAST if fast else ()), *overrides], output_dir=tmp_path)

    return make


def needs_real_fashion_mnist() -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not (FMNIST_SYSTEM / "train-images-idx3-ubyte.gz").exists(),
        reason=f"real Fashion-MNIST not found in {FMNIST_SYSTEM} (apt-get install dataset-fashion-mnist)",
    )


def run_main(main: Callable[[], None], args: list[str]) -> tuple[int, str]:
    """An entry point's `main()` in this process with `args` as its command line, as a user
    runs it: (exit status, stderr). Hydra's global state is cleared first."""
    import contextlib
    import io
    import sys

    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err):
        mp.setattr(sys, "argv", ["prog", *args])
        try:
            main()
            code = 0
        except SystemExit as exit_info:
            code = exit_info.code if isinstance(exit_info.code, int) else 1
    return code, err.getvalue()


def tree_hash(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) -> its sha256."""
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


class Payload:
    """Unpickling this creates `marker`: what a malicious checkpoint or run file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))
