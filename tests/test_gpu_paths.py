"""Device discipline without a GPU (issue #26, item 1): what a callback, loader or reference
path keeps follows the device it works on. The `meta` device stands in for a second device
(tensors with shapes and no data: any op mixing it with the CPU fails); the same paths run
on CUDA in tests/test_gpu.py."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping as LightningEarlyStopping
from torch import nn

from visionlab.app.assemble import build
from visionlab.data.loaders import LoaderEnv, MemoryLoader
from visionlab.data.transforms import Augment, BatchTransform
from visionlab.tools.benchmark_data import Prepared, correct_predictions
from visionlab.training.callbacks import EarlyStopping
from visionlab.training.task import fused_kernels
from visionlab.utils.threads import choose_threads

META = torch.device("meta")


def test_early_stopping_keeps_the_best_weights_when_lightning_moves_the_best_score(monkeypatch):
    # Lightning's check replaces best_score by the monitored tensor, on the metric's device
    # (a GPU): the callback must see the new best without comparing tensors across devices
    improved = iter([True, False])

    def lightning_check(self, trainer, pl_module):
        if next(improved):
            self.best_score = torch.tensor(0.25, device=META)

    monkeypatch.setattr(LightningEarlyStopping, "on_validation_end", lightning_check)
    callback, module = EarlyStopping(monitor="val/loss", restore_best_weights=True), nn.Linear(2, 1)
    callback.on_validation_end(SimpleNamespace(current_epoch=3, sanity_checking=False, callbacks=[]), module)
    assert callback.best_epoch == 3 and callback.best_weights is not None
    assert {v.device.type for v in callback.best_weights.values()} == {"cpu"}  # a defined device: the host
    callback.on_validation_end(
        SimpleNamespace(current_epoch=4, sanity_checking=False, callbacks=[]), module
    )  # no improvement
    assert callback.best_epoch == 3


def test_the_memory_loader_serves_augmented_and_mixed_batches_on_the_training_device():
    images, labels = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8), torch.arange(40) % 4
    augment = Augment(rotation=10, horizontal_flip=True, crop_padding=1, contrast=0.1, mixup=0.2, cutmix=1.0)
    transform = BatchTransform((0.5,), (0.25,), augment, seed=0, num_samples=40, num_classes=4)
    loader = MemoryLoader(images, labels, 8, transform, shuffle=True, env=lambda: LoaderEnv(device=META))
    batches = list(loader)
    assert len(batches) == 5
    assert {t.device for batch in batches for t in batch} == {META}
    assert batches[0][1].shape == (8, 4)  # soft labels of mixup / cutmix
    assert transform._scale.device == META, "the normalisation constants stay on the device"
    evaluation = MemoryLoader(images, labels, 16, BatchTransform((0.5,), (0.25,)), env=lambda: LoaderEnv(device=META))
    assert {t.device for batch in evaluation for t in batch} == {META}


def test_the_benchmark_reference_paths_evaluate_on_the_data_device_after_lightning_moved_the_net():
    # Lightning's teardown puts a module back on the CPU after fit; the accuracy pass must
    # follow the data (it crashed on CUDA: "Input type (torch.cuda.FloatTensor) and weight type")
    x, y = torch.empty(10, 1, 4, 4, device=META), torch.empty(10, dtype=torch.long, device=META)
    data = Prepared(META, None, {"test": (x, y)}, nn.Sequential(nn.Flatten(), nn.Linear(16, 3)))
    assert correct_predictions(data, "test", 4).device == META
    assert next(data.net.parameters()).device == META


@pytest.mark.parametrize(
    "optimizer, device, expected",
    [
        (torch.optim.Adam, "cuda", {"fused": True}),
        (torch.optim.AdamW, "cuda", {"fused": True}),
        (torch.optim.SGD, "cuda", {"fused": True}),
        (functools.partial(torch.optim.Adam, lr=0.1), "cuda", {"fused": True}),
        (functools.partial(torch.optim.Adam, foreach=False), "cuda", {}),  # the config chose
        (torch.optim.RMSprop, "cuda", {}),  # no fused kernels: torch's default (foreach) on CUDA
        (torch.optim.Adam, "cpu", {}),
    ],
)
def test_optimizers_use_fused_kernels_on_cuda_where_torch_has_them(optimizer, device, expected):
    assert fused_kernels(optimizer, torch.device(device)) == expected


def test_a_nan_loss_between_logging_steps_stops_before_validation_naming_its_step(cfg_factory, tmp_path, monkeypatch):
    cfg = cfg_factory(
        "model=mlp",
        "trainer.limit_train_batches=8",
        "trainer.log_every_n_steps=1000",
        "callbacks=default",
        "trainer.enable_checkpointing=true",
    )
    datamodule, task, trainer = build(cfg)
    loss = task.criterion.forward
    monkeypatch.setattr(
        task.criterion, "forward", lambda logits, y: loss(logits, y) * (float("nan") if task.global_step == 5 else 1.0)
    )
    with pytest.raises(FloatingPointError, match=r"^loss is nan at step 5 \(epoch 0\); training stopped"):
        trainer.fit(task, datamodule=datamodule)
    assert trainer.fit_loop.epoch_loop.batch_progress.current.completed == 8, "checked once, at the epoch's end"
    assert not list(tmp_path.rglob("*.ckpt")), "no checkpoint of non-finite weights"


def test_the_threads_key_sets_torchs_cpu_threads_and_says_so():
    before = torch.get_num_threads()
    try:
        threads, reason = choose_threads(1)
        assert threads == torch.get_num_threads() == 1
        assert reason.startswith("threads=1; OpenMP wait policy ")
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("user, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_importing_visionlab_makes_openmp_threads_wait_passively_unless_the_user_chose(user, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update({"OMP_WAIT_POLICY": user} if user else {})
    out = subprocess.run(
        [sys.executable, "-c", "import os, visionlab; print(os.environ['OMP_WAIT_POLICY'])"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert out.strip() == expected


def test_gpu_check_says_in_one_line_that_there_is_no_gpu_and_fails(monkeypatch, capsys, tmp_path):
    import importlib.util

    script = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", script)
    assert spec is not None and spec.loader is not None
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)  # its dataclasses look their module up
    spec.loader.exec_module(gpu_check)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--out", str(tmp_path)])
    assert gpu_check.main() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gpu-check: no CUDA device here")
    assert not any(tmp_path.iterdir()), "nothing run, nothing written"


def test_a_signal_after_a_nan_loss_keeps_the_last_good_checkpoint(tmp_path):
    """The NaN check runs at logging steps and epoch ends; a SIGTERM in between must not
    save the diverged weights over last.ckpt."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from visionlab.training.resilience import PreemptionCheckpoint

    saved = []
    trainer = SimpleNamespace(save_checkpoint=saved.append)

    class Diverged:
        def check_finite_loss(self):
            raise FloatingPointError("loss is nan at step 7 (epoch 0)")

    callback = PreemptionCheckpoint(str(tmp_path))
    callback.on_exception(trainer, Diverged(), SIGTERMException())
    assert saved == []
    callback.on_exception(trainer, SimpleNamespace(check_finite_loss=lambda: None), SIGTERMException())
    assert saved == [tmp_path / "last.ckpt"]
