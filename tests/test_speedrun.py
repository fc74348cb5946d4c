"""Weight averaging (Lightning's EMAWeightAveraging with visionlab's default callbacks)
checked against an average computed by hand, and the time-to-accuracy runner
(visionlab.tools.speedrun) on tiny synthetic runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from visionlab.app.config import compose_config
from visionlab.tools.speedrun import main, time_to_accuracy, write_table
from visionlab.training.callbacks import EarlyStopping
from visionlab.training.checkpoint import net_state, read_checkpoint

DECAY = 0.5
TINY = (
    "data=synthetic",
    "data.train_size=96",
    "data.val_size=32",
    "data.test_size=32",
    "data.batch_size=32",
    "model=mlp",
    "model.hidden=[8]",
    "trainer.accelerator=cpu",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=none",
)


class HandEMA(Callback):
    """The exponential moving average of the net's parameters after every optimizer step,
    computed here by hand, kept as it stood at each epoch's end."""

    def __init__(self) -> None:
        self.ema: list[torch.Tensor] | None = None
        self.at_epoch_end: list[list[torch.Tensor]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        now = [p.detach().clone() for p in pl_module.net.parameters()]
        self.ema = now if self.ema is None else [DECAY * e + (1 - DECAY) * p for e, p in zip(self.ema, now)]

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert self.ema is not None
        self.at_epoch_end.append([e.clone() for e in self.ema])


def same(weights: list[torch.Tensor], expected: list[torch.Tensor]) -> bool:
    return len(weights) == len(expected) and all(torch.allclose(w, e, atol=1e-6) for w, e in zip(weights, expected))


@pytest.mark.parametrize("weights_only", [False, True])
def test_ema_weights_are_validated_restored_and_saved(tmp_path, weights_only):
    from visionlab.app.assemble import build

    cfg = compose_config(
        [
            *TINY,
            "trainer.max_epochs=3",
            "trainer.limit_train_batches=2",
            f"callbacks.model_checkpoint.save_weights_only={weights_only}",
            "callbacks/weight_averaging=ema",
            f"callbacks.weight_averaging.decay={DECAY}",
        ],
        tmp_path,
    )
    datamodule, task, trainer = build(cfg)
    hand = HandEMA()
    trainer.callbacks.append(hand)
    raw = [p.detach().clone() for p in task.net.parameters()]
    trainer.fit(task, datamodule=datamodule)
    stopper = next(cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping))
    assert stopper.restored and stopper.best_epoch is not None
    # early stopping restored the best epoch's averaged weights, not its raw ones
    assert same(list(task.net.parameters()), hand.at_epoch_end[stopper.best_epoch])
    assert not same(list(task.net.parameters()), raw)
    best = Path(trainer.checkpoint_callback.best_model_path)  # type: ignore[union-attr]
    epoch = int(best.name[len("epoch") : len("epoch") + 3])
    assert same(list(net_state(read_checkpoint(best)).values()), hand.at_epoch_end[epoch])


def test_time_to_accuracy_sums_epoch_seconds_up_to_the_first_epoch_reaching_the_target(tmp_path):
    history = tmp_path / "history.csv"
    history.write_text(
        "epoch,train_loss,train_acc,val_loss,val_acc,lr,epoch_seconds\n"
        "1,1,0.5,1,,0.1,10.0\n2,1,0.8,1,0.92,0.1,12.5\n3,1,0.9,1,0.935,0.1,11.0\n"
        "4,1,0.9,1,0.90,0.1,9.0\n"
    )
    assert time_to_accuracy(history, 0.93) == pytest.approx(33.5)
    assert time_to_accuracy(history, 0.92) == pytest.approx(22.5)
    assert time_to_accuracy(history, 0.95) is None


def test_the_runner_writes_one_row_per_seed_and_the_leaderboard(tmp_path, capsys):
    # the CPU recipe (ResNet9, EMA, flip TTA) on tiny synthetic data
    overrides = [
        *TINY[:5],
        *TINY[7:],
        "model.widths=[4,8,8,8]",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=2",
        "callbacks.progress_bar=null",
        "logger=none",
        "callbacks.weight_averaging.decay=0.5",
        "optimizer.lr=2",
    ]  # averaged and raw weights far apart
    assert main(["run", "speedrun_cpu", "--seeds", "2", "--target", "0.01", "--out", str(tmp_path), *overrides]) == 0
    [path] = tmp_path.glob("speedrun_cpu-*.json")
    result = json.loads(path.read_text())
    rows = result["runs"]
    assert [r["seed"] for r in rows] == [0, 1] and result["recipe"] == "speedrun_cpu"
    for row in rows:
        assert Path(row["run_dir"]) == tmp_path / path.stem / f"seed{row['seed']}"
        assert json.loads((Path(row["run_dir"]) / "fit_clock.json").read_text())["epochs"] == row["epochs"] == 2
        assert row["train_seconds"] > 0 and row["startup_seconds"] > 0 and 0 <= row["test_acc"] <= 1
        assert row["time_to_target"] == time_to_accuracy(Path(row["run_dir"]) / "history.csv", 0.01)
    # the test after fit ran on the averaged weights the tested file holds (the recipe has EMA)
    from visionlab.entrypoints.evaluate import evaluate

    tested = json.loads((Path(rows[0]["run_dir"]) / "metrics.json").read_text())
    again = evaluate(compose_config([f"ckpt_path={tested['test/ckpt_path']}"], tmp_path / "eval", "evaluate"))
    assert again["loss"] == pytest.approx(tested["test/loss"], rel=1e-5)
    accs = [r["test_acc"] for r in rows]
    summary = result["summary"]
    assert summary["test_acc_mean"] == pytest.approx(sum(accs) / 2) and summary["test_acc_min"] == min(accs)
    assert summary["test_acc_spread"] == pytest.approx(max(accs) - min(accs))
    assert math.isfinite(summary["train_seconds_mean"])
    board = tmp_path / "leaderboard.md"
    board.write_text("# Leaderboard\n\nHow it is measured.\n\n| recipe | old table |\n")
    write_table([path], board)
    text = board.read_text()
    assert text.startswith("# Leaderboard\n\nHow it is measured.\n\n") and "old table" not in text
    assert f"| speedrun_cpu | {result['hardware']} | 2 | {summary['test_acc_mean']:.4f} ± " in text
