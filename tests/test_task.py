"""The task module: reproducible steps, soft labels, penalties, scheduler wiring, loading."""

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from visionlab.app.assemble import CHECKS, build
from visionlab.app.config import ConfigError, validate
from visionlab.models import MLP
from visionlab.training.task import ClassifierTask


def trained_weights(cfg_factory, *overrides):
    datamodule, task, trainer = build(cfg_factory(*overrides))
    trainer.fit(task, datamodule=datamodule)
    return [p.detach().clone() for p in task.net.parameters()], trainer


def test_same_seed_gives_the_same_weights_and_another_seed_others(cfg_factory):
    common = (
        "model=mlp",
        "model.dropout=0.3",
        "scheduler=onecycle",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=null",
        "data.train_size=256",
        "data.augment.rotation=10",
    )
    reference, trainer = trained_weights(cfg_factory, *common)
    again, other = trained_weights(cfg_factory, *common)
    assert other.global_step == trainer.global_step == 2 * 6
    assert all(torch.equal(a, b) for a, b in zip(reference, again))
    different, _ = trained_weights(cfg_factory, *common, "seed=7")
    assert not all(torch.equal(a, b) for a, b in zip(reference, different))


def soft_step(loss="cross_entropy"):
    """One training step's loss on soft labels, as mixup makes them (rows sum to 1)."""
    net = MLP((1, 2, 2), 3, hidden=[4])
    task = ClassifierTask(net, torch.optim.SGD, loss=loss)
    task.log = lambda *a, **k: None  # no trainer attached
    x, hard = torch.randn(6, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    y = 0.7 * F.one_hot(hard, 3).float() + 0.3 * F.one_hot(hard.roll(1), 3).float()
    task.trainer = L.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    loss = task.training_step((x, y), 0)
    with torch.no_grad():
        logits = net(x)
    return loss, F.cross_entropy(logits, y), (logits.argmax(1) == hard).sum(), task._train_sums


def test_soft_labels_train_with_cross_entropy_and_count_accuracy_on_their_argmax():
    loss, expected, hits, sums = soft_step()
    assert torch.allclose(loss, expected)
    assert sums[2] == 6 and sums[1] == hits and torch.allclose(sums[0], 6 * loss.detach())


def test_hinge_refuses_soft_labels_in_one_line():
    with pytest.raises(ValueError, match=r"^task.loss=hinge cannot take soft labels .*task.loss=cross_entropy$"):
        soft_step("hinge")


def test_load_from_checkpoint_needs_only_the_path(cfg_factory, tmp_path):
    datamodule, task, trainer = build(cfg_factory("model=mlp", "trainer.enable_checkpointing=true"))
    trainer.fit(task, datamodule=datamodule)
    path = tmp_path / "task.ckpt"
    trainer.save_checkpoint(path)
    loaded = ClassifierTask.load_from_checkpoint(path)
    assert type(loaded.net) is type(task.net) and loaded.model_config == task.model_config
    state = task.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(loaded.eval()(x), task.eval()(x))


def test_max_steps_counts_optimizer_steps(cfg_factory):
    _, trainer = trained_weights(
        cfg_factory, "model=mlp", "trainer.max_steps=6", "trainer.limit_train_batches=null", "trainer.max_epochs=5"
    )
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
    """Refused where a run's config is checked, once, before build (prepare_run, a job's start)."""
    cfg = cfg_factory("model=mlp", "scheduler=plateau", "callbacks=default", f"{key}=val/los")
    with pytest.raises(ConfigError, match=f"{key}='val/los' is never logged; expected one of train/loss, .*val/loss"):
        validate(cfg, CHECKS)


def test_plateau_scheduler_cuts_the_rate_when_val_loss_stalls(cfg_factory):
    _, trainer = trained_weights(
        cfg_factory,
        "model=mlp",
        "scheduler=plateau",
        "scheduler.factory.patience=0",
        "scheduler.factory.min_lr=0",
        "optimizer=sgd",
        "optimizer.lr=1e-5",
        "trainer.max_epochs=3",
    )
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-5 * 0.2**2)


def test_a_non_finite_loss_stops_training_naming_the_step_and_a_hint(cfg_factory, tmp_path):
    cfg = cfg_factory(
        "model=mlp",
        "optimizer=sgd",
        "optimizer.lr=1e12",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=null",
        "callbacks=default",
        "trainer.enable_checkpointing=true",
        "trainer.enable_progress_bar=true",
        "trainer.enable_model_summary=true",
    )
    datamodule, task, trainer = build(cfg)
    with pytest.raises(
        FloatingPointError, match=r"loss is (nan|inf) at step \d+ \(epoch 0\); .*lower the learning rate"
    ):
        trainer.fit(task, datamodule=datamodule)
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists(), "no checkpoint of non-finite weights"


def test_the_task_tells_the_datamodule_its_position_in_the_epoch(cfg_factory):
    """What a mid-epoch checkpoint saves of the memory loader: the batches done so far."""
    datamodule, task, trainer = build(cfg_factory("model=mlp", "trainer.limit_train_batches=3", "trainer.max_epochs=2"))
    saved = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            saved.append(datamodule.state_dict()["train_position"])

    trainer.callbacks.append(Record())
    trainer.fit(task, datamodule=datamodule)
    assert saved == [{"epoch": epoch, "steps_done": done} for epoch in (0, 1) for done in range(3)]
