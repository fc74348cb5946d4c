"""The benchmark's three training paths on one config: visionlab (its Trainer, task,
DataModule and default callbacks), `lightning` (the plainest LightningModule, nothing else
on: what any Lightning run costs) and `plain` (a loop with no framework)."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from visionlab.app.assemble import build
from visionlab.tools.benchmark_clock import EpochTimer, now, synchronize
from visionlab.tools.benchmark_data import Batches, autocast, data_accuracy, prepare
from visionlab.training.task import fused_kernels
from visionlab.training.trainer_state import callbacks_of


def run_visionlab(cfg: DictConfig) -> tuple[list[float], list[float], float, nn.Module]:
    """Fit through build(): Trainer, task module, DataModule and the default callbacks."""
    datamodule, task, trainer = build(cfg)
    timer = EpochTimer()
    callbacks_of(trainer).append(timer)
    trainer.fit(task, datamodule=datamodule)
    test = trainer.test(task, datamodule=datamodule, verbose=False)
    return timer.seconds, timer.whole, float(test[0]["test/acc"]), task.net


class MinimalModule(L.LightningModule):
    """The plainest LightningModule: cross-entropy, the config's optimizer, validation accuracy."""

    def __init__(self, net: nn.Module, optimizer: Callable) -> None:
        super().__init__()
        self.net, self.optimizer = net, optimizer

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val/acc", (self.net(x).argmax(1) == y).float().mean(), batch_size=len(y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer(self.parameters(), **fused_kernels(self.optimizer, self.device))  # as visionlab's


def run_lightning(cfg: DictConfig, epochs: int) -> tuple[list[float], list[float], float]:
    """Lightning's floor: the same net and tensors through `Trainer.fit` with nothing else on."""
    data = prepare(cfg)
    module = MinimalModule(data.net, instantiate(cfg.optimizer))
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator=data.device.type,
        devices=1,
        precision=cfg.trainer.get("precision", "32-true"),
        logger=False,
        callbacks=[timer],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(
        module, Batches(data, "train", cfg.data.batch_size, cfg.seed), Batches(data, "val", cfg.data.eval_batch_size)
    )
    return timer.seconds, timer.whole, data_accuracy(data, "test", cfg.data.eval_batch_size)


def run_plain(cfg: DictConfig, epochs: int) -> tuple[list[float], list[float], float, int]:
    """The minimal loop: normalised float tensors in memory, randperm batches, no framework,
    and a validation pass (accuracy) after each epoch.

    It trains on the device and in the autocast dtype Lightning would use for `cfg`.
    """
    data = prepare(cfg)
    net, device = data.net, data.device
    factory = instantiate(cfg.optimizer)
    opt = factory(net.parameters(), **fused_kernels(factory, device))
    scaler = torch.amp.GradScaler(device.type, enabled=data.dtype is torch.float16)
    batches, seconds, whole = Batches(data, "train", cfg.data.batch_size, cfg.seed), [], []
    for _ in range(epochs):
        net.train()
        synchronize(device)
        start = now()
        for xb, yb in batches:
            with autocast(data):
                loss = F.cross_entropy(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        synchronize(device)
        seconds.append(now() - start)
        data_accuracy(data, "val", cfg.data.eval_batch_size)
        synchronize(device)
        whole.append(now() - start)
    return seconds, whole, data_accuracy(data, "test", cfg.data.eval_batch_size), len(data.splits["train"][1])
