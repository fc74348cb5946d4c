"""visionlab on one CUDA device (issue #26): the default run, precisions and layouts, a
training step without host synchronisation, data kept on the device, fused optimizers and
the benchmark. Marked `gpu` and skipped without CUDA: `pytest -m gpu` (or `make gpu-check`)
on a GPU machine. tests/test_gpu_paths.py and tests/test_sync_free.py check what a CPU can."""

from __future__ import annotations

import json
from typing import Any

import lightning as L
import pytest
import torch

from visionlab.app.assemble import build
from visionlab.training.trainer_state import callbacks_of

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

FIRST, STEPS = 3, 20
REAL_RUN = (
    "callbacks=default",
    "logger=many",
    "trainer.enable_checkpointing=true",
    "trainer.enable_progress_bar=true",
    "trainer.enable_model_summary=true",
    "trainer=gpu",
)


class SyncErrors(L.Callback):
    """torch.cuda.set_sync_debug_mode("error") for whole training steps FIRST .. FIRST + STEPS - 1,
    and the device of every batch the loader hands Lightning (before its transfer)."""

    def __init__(self) -> None:
        self.steps, self.devices = 0, set()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.devices |= {t.device.type for t in batch}
        if batch_idx == FIRST:
            torch.cuda.set_sync_debug_mode("error")
        elif batch_idx == FIRST + STEPS:
            torch.cuda.set_sync_debug_mode("default")
        self.steps += torch.cuda.get_sync_debug_mode() == 2


@pytest.mark.parametrize(
    "overrides",
    [
        (),
        (
            "model=mlp",
            "model.dropout=0.2",
            "optimizer=sgd",
            "task.l2=1e-4",
            "data.augment.rotation=10",
            "data.augment.horizontal_flip=true",
            "data.augment.mixup=0.2",
        ),
        ("data.loader=dataloader",),
    ],
    ids=["default", "mlp_augmented_mixup", "dataloader"],
)
def test_steady_state_steps_never_synchronise_with_the_host(overrides, cfg_factory):
    cfg = cfg_factory(
        *overrides,
        *REAL_RUN,
        f"trainer.limit_train_batches={FIRST + STEPS + 2}",
        "trainer.log_every_n_steps=1000",
        "data.batch_size=16",
        "data.train_size=600",
    )
    datamodule, task, trainer = build(cfg)
    probe = SyncErrors()
    callbacks_of(trainer).insert(0, probe)
    try:
        trainer.fit(task, datamodule=datamodule)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert probe.steps == STEPS
    if "data.loader=dataloader" not in overrides:
        assert probe.devices == {"cuda"}, "in-memory data lives on the GPU, augmented there"


def test_the_default_run_trains_two_epochs_restores_the_best_weights_and_tests(cfg_factory, tmp_path):
    # crashed at the end of epoch 1 in EarlyStopping (best_score moved to the GPU)
    cfg = cfg_factory(*REAL_RUN, "trainer.max_epochs=2", "trainer.limit_train_batches=20")
    datamodule, task, trainer = build(cfg)
    trainer.fit(task, datamodule=datamodule)
    assert trainer.current_epoch == 2 and next(task.parameters()).is_cuda
    assert trainer.optimizers[0].defaults.get("fused") is True, "Adam's fused CUDA kernels"
    assert task._train_sums.device.type == "cuda"
    assert trainer.test(task, datamodule=datamodule)[0]["test/acc"] >= 0


@pytest.mark.parametrize(
    "precision, channels_last", [("32-true", True), ("16-mixed", False), ("bf16-mixed", True), ("bf16-true", False)]
)
def test_every_precision_and_layout_trains_on_the_gpu(precision, channels_last, cfg_factory):
    cfg = cfg_factory(
        "trainer=gpu",
        f"trainer.precision={precision}",
        f"channels_last={channels_last}",
        "callbacks=default",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=4",
    )
    datamodule, task, trainer = build(cfg)
    trainer.fit(task, datamodule=datamodule)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def test_compile_trains_on_the_gpu(cfg_factory):
    cfg = cfg_factory("trainer=gpu", "compile=true", "trainer.limit_train_batches=4")
    datamodule, task, trainer = build(cfg)
    trainer.fit(task, datamodule=datamodule)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def test_the_benchmark_runs_its_three_paths_on_the_gpu_and_names_it(tmp_path):
    from visionlab.tools.benchmark import main

    out = tmp_path / "bench.json"
    main(
        [
            "--cases",
            "notes_mlp",
            "--batch-sizes",
            "32",
            "--epochs",
            "1",
            "--json",
            str(out),
            "trainer=gpu",
            "data=synthetic",
            "data.train_size=320",
            "data.val_size=64",
            "data.test_size=64",
        ]
    )
    rows = json.loads(out.read_text())["rows"]
    assert [r["path"] for r in rows] == ["visionlab", "lightning", "plain"]
    assert all(torch.cuda.get_device_name() in r["device"] for r in rows)
