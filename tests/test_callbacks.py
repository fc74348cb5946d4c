"""The Keras behaviours of visionlab.training.callbacks, on a two-weight module whose monitored
score is scripted per epoch, so the best epoch is known in advance."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from visionlab.models import CNN, MLP
from visionlab.training.callbacks import EarlyStopping, History, ModelCheckpoint
from visionlab.utils.summary import model_summary

SCORES = (3.0, 1.0, 2.0, 4.0)  # lower is better: epoch 1 is the best, epoch 3 the last


class Scripted(L.LightningModule):
    """Weights change every epoch; `score` is logged from SCORES; weights seen per epoch kept."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.seen: dict[int, torch.Tensor] = {}

    def training_step(self, batch, batch_idx):
        loss = (self.layer(batch[0]) - 1).pow(2).mean()
        self.log("train/loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", SCORES[self.current_epoch])

    def on_validation_epoch_end(self):
        self.seen[self.current_epoch] = self.layer.weight.detach().clone()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(8, 2, generator=torch.Generator().manual_seed(0))), batch_size=4)

    val_dataloader = train_dataloader


def fit(callbacks, tmp_path) -> Scripted:
    module = Scripted()
    trainer = L.Trainer(
        max_epochs=len(SCORES),
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        accelerator="cpu",
    )
    trainer.fit(module)
    return module


@pytest.mark.parametrize("restore", [True, False])
def test_early_stopping_restores_the_best_weights_when_asked(restore, tmp_path):
    stopper = EarlyStopping(monitor="val/loss", mode="min", patience=10, restore_best_weights=restore)
    module = fit([stopper], tmp_path)
    expected = module.seen[1] if restore else module.seen[3]
    assert torch.equal(module.layer.weight, expected)
    assert not torch.equal(module.seen[1], module.seen[3])
    assert stopper.restored is restore


@pytest.mark.parametrize("best_only,files", [(True, 1), (False, len(SCORES))])
def test_model_checkpoint_save_best_only_and_best_path_printed(best_only, files, tmp_path, caplog):
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="val/loss", mode="min", save_best_only=best_only, save_weights_only=True
    )
    with caplog.at_level(logging.INFO, logger="visionlab"):
        fit([checkpoint], tmp_path)
    assert len(list((tmp_path / "ckpt").glob("*.ckpt"))) == files
    assert "epoch=1" in checkpoint.best_model_path
    assert f"Best checkpoint: {checkpoint.best_model_path} (val/loss=1.0000)" in caplog.text
    assert "optimizer_states" not in torch.load(checkpoint.best_model_path, weights_only=True)


def test_history_has_one_row_per_epoch_and_survives_a_resume(tmp_path):
    history = History(tmp_path, plot=False)
    fit([history], tmp_path)
    assert [row["epoch"] for row in history.rows] == [0, 1, 2, 3]
    assert [row["val_loss"] for row in history.rows] == list(SCORES)
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert lines[0] == "epoch,train_loss,train_acc,val_loss,val_acc,lr,epoch_seconds" and len(lines) == 5
    resumed = History(tmp_path / "resumed", plot=False)
    resumed.load_state_dict(history.state_dict())
    assert resumed.rows == history.rows


def test_history_plots_every_n_epochs_and_after_the_last(tmp_path, monkeypatch):
    plotted = []  # rows in history.png at each drawing
    monkeypatch.setattr("visionlab.training.callbacks.plot_history", lambda rows, path: plotted.append(len(rows)))
    history = History(tmp_path, plot_every_n_epochs=3)
    fit([history], tmp_path)
    assert plotted == [3, 4]
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 1 + len(SCORES)
    with pytest.raises(ValueError, match="plot_every_n_epochs=0"):
        History(tmp_path, plot_every_n_epochs=0)


def test_summary_counts_like_keras_and_leaves_batchnorm_alone():
    text = model_summary(MLP([1, 28, 28], 10), [1, 28, 28])
    assert "Total params: 266,610" in text and "Non-trainable params: 0" in text  # the notes' Keras MLP
    assert "(None, 300)" in text
    cnn = CNN([1, 28, 28], 10, channels=[4], dense=[])
    before = [b.clone() for b in cnn.buffers()]
    text = model_summary(cnn, [1, 28, 28])
    assert "Non-trainable params: 8" in text  # BatchNorm's running mean and variance, as Keras counts them
    assert "(None, 4, 14, 14)" in text and cnn.training
    assert all(torch.equal(a, b) for a, b in zip(before, cnn.buffers()))
