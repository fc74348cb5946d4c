"""The task module: chunked training is the same training, penalties, scheduler wiring."""

import pytest
import torch

from visionlab.config import ConfigError
from visionlab.models import MLP
from visionlab.task import ClassifierTask
from visionlab.train import build


def trained_weights(cfg_factory, *overrides):
    datamodule, task, trainer = build(cfg_factory(*overrides))
    trainer.fit(task, datamodule=datamodule)
    return [p.detach().clone() for p in task.net.parameters()], trainer


@pytest.mark.parametrize("model", ["model=mlp", "model=cnn model.channels=[4,8] model.dense=[16]"])
def test_same_seed_gives_the_same_weights_whatever_the_chunk(model, cfg_factory):
    common = (*model.split(), "model.dropout=0.3", "scheduler=onecycle", "trainer.max_epochs=2",
              "trainer.limit_train_batches=null", "data.train_size=256", "data.augment.rotation=10")
    reference, trainer = trained_weights(cfg_factory, *common, "data.chunk=1")
    for chunk in (3, 100):
        weights, other = trained_weights(cfg_factory, *common, f"data.chunk={chunk}")
        assert other.global_step == trainer.global_step == 2 * 6
        assert all(torch.equal(a, b) for a, b in zip(reference, weights)), f"chunk={chunk} changed the updates"
    different, _ = trained_weights(cfg_factory, *common, "data.chunk=3", "seed=7")
    assert not all(torch.equal(a, b) for a, b in zip(reference, different))


def test_max_steps_counts_optimizer_steps_even_inside_a_chunk(cfg_factory):
    _, trainer = trained_weights(cfg_factory, "model=mlp", "data.chunk=4", "trainer.max_steps=6",
                                 "trainer.limit_train_batches=null", "trainer.max_epochs=5")
    assert trainer.global_step == 6


def test_penalties_are_lasso_ridge_and_their_sum_on_weights_only():
    net = MLP((1, 2, 2), 2, hidden=[3])
    weights = [p for p in net.parameters() if p.ndim >= 2]
    l1 = sum(p.abs().sum() for p in weights)
    l2 = sum(p.pow(2).sum() for p in weights)
    make = lambda **kw: ClassifierTask(net, torch.optim.SGD, **kw)  # noqa: E731
    assert make(l1=0.1).penalty().item() == pytest.approx(0.1 * l1.item())
    assert make(l2=0.2).penalty().item() == pytest.approx(0.2 * l2.item())
    assert make(l1=0.1, l2=0.2).penalty().item() == pytest.approx(0.1 * l1.item() + 0.2 * l2.item())
    assert make().penalty().item() == 0


@pytest.mark.parametrize("key", ["scheduler.monitor", "callbacks.early_stopping.monitor"])
def test_a_monitor_that_is_never_logged_is_refused_before_building(key, cfg_factory):
    cfg = cfg_factory("model=mlp", "scheduler=plateau", "callbacks=default", f"{key}=val/los")
    with pytest.raises(ConfigError, match=f"{key}='val/los' is never logged; expected one of train/loss, .*val/loss"):
        build(cfg)


def test_plateau_scheduler_cuts_the_rate_when_val_loss_stalls(cfg_factory):
    _, trainer = trained_weights(cfg_factory, "model=mlp", "scheduler=plateau", "scheduler.factory.patience=0", "scheduler.factory.min_lr=0",
                                 "optimizer=sgd", "optimizer.lr=1e-5", "trainer.max_epochs=3")
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-5 * 0.2**2)


def test_a_non_finite_loss_stops_training_naming_the_step_and_a_hint(cfg_factory, tmp_path):
    cfg = cfg_factory("model=mlp", "optimizer=sgd", "optimizer.lr=1e12", "trainer.max_epochs=3",
                      "trainer.limit_train_batches=null", "callbacks=default", "trainer.enable_checkpointing=true",
                      "trainer.enable_progress_bar=true", "trainer.enable_model_summary=true")
    datamodule, task, trainer = build(cfg)
    with pytest.raises(FloatingPointError, match=r"loss is (nan|inf) at step \d+ \(epoch 0\); .*lower the learning rate"):
        trainer.fit(task, datamodule=datamodule)
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists(), "no checkpoint of non-finite weights"
