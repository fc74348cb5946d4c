"""visionlab behaves as Lightning documents: the reference is a plain LightningModule on a
plain DataLoader with the same numbers of batches, run with the same Trainer flag, and
Lightning's own callbacks run through the config."""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.loggers import Logger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from visionlab.app.assemble import build

TRAIN, VAL, BATCH, EVAL_BATCH = 200, 64, 32, 16  # 7 training batches (the last one short), 4 validation batches
DATA = (
    "data=synthetic",
    f"data.train_size={TRAIN + VAL}",
    f"data.val_size={VAL}",
    f"data.batch_size={BATCH}",
    f"data.eval_batch_size={EVAL_BATCH}",
    "model=mlp",
    "model.hidden=[16]",
    "scheduler=none",
    "trainer.limit_train_batches=null",
    "trainer.limit_val_batches=null",
    "trainer.max_epochs=2",
)
COMMON_FLAGS = {"log_every_n_steps": 3}


class Counter(Callback):
    """What Lightning did: hook calls, validations, progress-bar totals, clipped gradients."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.bar_totals: list[tuple[Any, Any]] = []
        self.bar_done: list[Any] = []
        self.grad_norm, self.grad_max, self.dtypes = 0.0, 0.0, set()

    def _count(self, hook: str) -> None:
        self.counts[hook] = self.counts.get(hook, 0) + 1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._count("train_batch_start")
        assert isinstance(batch, (list, tuple)) and len(batch) == 2 and batch[0].ndim >= 2

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._count("train_batch_end")
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if grads:  # after the step and any clipping, before the next zero_grad
            self.grad_norm = max(
                self.grad_norm,
                float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))),
            )
            self.grad_max = max(self.grad_max, max(float(g.abs().max()) for g in grads))
        self.dtypes |= {p.dtype for p in pl_module.parameters()}

    def on_before_backward(self, trainer, pl_module, loss):
        self._count("before_backward")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self._count("before_optimizer_step")

    def on_validation_epoch_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._count("validations")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self._count("val_batches")

    def on_train_epoch_end(self, trainer, pl_module):
        bar = trainer.progress_bar_callback
        self.bar_totals.append((bar.train_progress_bar.total, bar.total_val_batches))
        self.bar_done.append(getattr(bar.train_progress_bar, "completed", getattr(bar.train_progress_bar, "n", None)))


class StepRecorder(Logger):
    """The steps at which the per-step training loss reaches the loggers."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[int] = []

    name, version = "rec", 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if "train/loss_step" in metrics:
            self.steps.append(step)

    def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
        pass


class PlainModule(L.LightningModule):
    """The minimal module of Lightning's docs: an MLP, one batch per step, its loss returned."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 16), nn.ReLU(), nn.Linear(16, 10))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train/loss_step", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", F.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def loader(n: int, batch: int) -> DataLoader:
    gen = torch.Generator().manual_seed(0)
    return DataLoader(
        TensorDataset(torch.randn(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen)),
        batch_size=batch,
    )


def observe(trainer: L.Trainer, counter: Counter, recorder: StepRecorder) -> dict[str, Any]:
    return {
        "counts": counter.counts,
        "global_step": trainer.global_step,
        "epoch": trainer.current_epoch,
        "bar_totals": counter.bar_totals,
        "bar_done": counter.bar_done,
        "num_training_batches": trainer.num_training_batches,
        "num_val_batches": trainer.num_val_batches,
        "logged_steps": recorder.steps,
        "dtypes": counter.dtypes,
    }


def trainer_kwargs(flags: dict[str, Any]) -> dict[str, Any]:
    return {
        "max_epochs": 2,
        "accelerator": "cpu",
        "devices": 1,
        "num_sanity_val_steps": 0,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        **COMMON_FLAGS,
        **flags,
    }


def run_plain(flags: dict[str, Any], tmp_path) -> tuple[dict[str, Any], Counter]:
    counter, recorder = Counter(), StepRecorder()
    torch.manual_seed(0)
    trainer = L.Trainer(
        callbacks=[counter, TQDMProgressBar(refresh_rate=0)],
        logger=False,
        default_root_dir=tmp_path / "plain",
        **trainer_kwargs(flags),
    )
    trainer.loggers = [recorder]  # as on visionlab's side
    trainer.fit(PlainModule(), loader(TRAIN, BATCH), loader(VAL, EVAL_BATCH))
    return observe(trainer, counter, recorder), counter


# visionlab's default callbacks (checkpoints, early stopping, history, TensorBoard views...)
# and default loggers (TensorBoard and CSV), as a user's run has them, on the same tiny data.
DEFAULTS = (
    "callbacks=default",
    "logger=many",
    "trainer.enable_checkpointing=true",
    "trainer.enable_model_summary=true",
    "callbacks.history.plot=false",
    "callbacks.validation_images.every_n_epochs=10",
    "callbacks.insight_figures.max_images=16",
    "callbacks.validation_images.max_images=16",
    "callbacks.validation_images.samples=4",
)


def run_visionlab(
    flags: dict[str, Any], cfg_factory, *overrides: str, defaults: bool = False
) -> tuple[dict[str, Any], Counter, L.Trainer]:
    counter, recorder = Counter(), StepRecorder()
    flags = {**COMMON_FLAGS, **flags}
    cfg = cfg_factory(
        *DATA,
        "trainer.enable_progress_bar=true",
        *overrides,
        *(DEFAULTS if defaults else ()),
        "++callbacks.progress_bar._target_=lightning.pytorch.callbacks.TQDMProgressBar",
        "++callbacks.progress_bar.refresh_rate=0",
        *(f"++trainer.{k}={v}" for k, v in flags.items()),
    )
    datamodule, task, trainer = build(cfg)
    trainer.callbacks.append(counter)
    trainer.loggers = [*trainer.loggers, recorder] if defaults else [recorder]
    trainer.fit(task, datamodule=datamodule)
    return observe(trainer, counter, recorder), counter, trainer


FLAGS = [
    {},
    {"limit_train_batches": 3},
    {"limit_train_batches": 0.5},
    {"limit_val_batches": 2},
    {"val_check_interval": 2},
    {"val_check_interval": 0.5},
    {"check_val_every_n_epoch": 2, "max_epochs": 3},
    {"accumulate_grad_batches": 3},
    {"gradient_clip_val": 0.05, "gradient_clip_algorithm": "norm"},
    {"gradient_clip_val": 0.001, "gradient_clip_algorithm": "value"},
    {"log_every_n_steps": 2},
    {"max_steps": 5, "max_epochs": -1},
    {"max_epochs": 3},
    {"max_steps": 3},  # stops before the first validation
    {"limit_val_batches": 0},  # no validation at all
    {"min_epochs": 3, "max_epochs": 2},  # Lightning: min_epochs wins
    {"min_steps": 10, "max_steps": 10, "max_epochs": 1},
    {"precision": "64-true"},
    {"precision": "64-true", "loader": "dataloader"},  # the batch transform runs after Lightning's convert_input
    {"precision": "bf16-mixed", "fast_dev_run": 2},  # emulated bf16 on this CPU: a smoke run only
    {"precision": "bf16-true", "fast_dev_run": 2},
    {"precision": "16-mixed", "fast_dev_run": 2},
]
_plain_runs: dict[str, dict[str, Any]] = {}  # one plain reference per flag row, shared by both configs


def flag_id(flags: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in flags.items()) or "defaults"


@pytest.mark.parametrize("config", ["fast", "default_callbacks"])
@pytest.mark.parametrize("flags", FLAGS, ids=flag_id)
def test_trainer_flags_do_what_they_do_for_a_plain_lightning_module(flags, config, cfg_factory, tmp_path):
    flags = dict(flags)
    data = [f"data.loader={flags.pop('loader')}"] if "loader" in flags else []
    if flag_id(flags) not in _plain_runs:
        _plain_runs[flag_id(flags)] = run_plain(flags, tmp_path)[0]
    plain = _plain_runs[flag_id(flags)]
    ours, our_counter, _ = run_visionlab(flags, cfg_factory, *data, defaults=config == "default_callbacks")
    assert ours == plain
    assert plain["counts"]["before_optimizer_step"] == plain["global_step"] > 0
    if flags.get("gradient_clip_algorithm") == "norm":
        assert our_counter.grad_norm <= flags["gradient_clip_val"] * (1 + 1e-5)
    if flags.get("gradient_clip_algorithm") == "value":
        assert our_counter.grad_max <= flags["gradient_clip_val"] * (1 + 1e-5)
    if config == "default_callbacks" and not flags.get("fast_dev_run"):  # fast_dev_run writes no checkpoint
        assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
        assert any(tmp_path.rglob("metrics.csv"))  # the CSV logger wrote


def test_a_flag_combination_lightning_refuses_is_one_clean_line_before_the_data_is_read(cfg_factory, tmp_path):
    """Lightning refuses it once the data is read (a ValueError); the config check, before."""
    from visionlab.app.assemble import CHECKS
    from visionlab.app.config import ConfigError, validate

    cfg = cfg_factory(*DATA, "++trainer.val_check_interval=100")
    with pytest.raises(
        ConfigError,
        match=r"^trainer.val_check_interval=100 is more than the 7 training batches of "
        r"an epoch; expected at most that, or trainer.check_val_every_n_epoch=null",
    ):
        validate(cfg, CHECKS)
    plain = L.Trainer(logger=False, default_root_dir=tmp_path, **trainer_kwargs({"val_check_interval": 100}))
    with pytest.raises(ValueError, match=r"val_check_interval.*100.*\(7\)"):  # the same count as Lightning's
        plain.fit(PlainModule(), loader(TRAIN, BATCH), loader(VAL, EVAL_BATCH))


# --- Lightning's callbacks through the config -------------------------------------------------


def fit_with(cfg_factory, *overrides: str):
    datamodule, task, trainer = build(cfg_factory(*DATA, *overrides))
    before = [p.detach().clone() for p in task.net.parameters()]
    trainer.fit(task, datamodule=datamodule)
    return task, trainer, before


def callback(trainer: L.Trainer, kind: type) -> Any:
    return next(c for c in trainer.callbacks if isinstance(c, kind))


def test_stochastic_weight_averaging_averages_from_its_start_epoch(cfg_factory):
    from lightning.pytorch.callbacks import StochasticWeightAveraging

    task, trainer, _ = fit_with(
        cfg_factory,
        "trainer.max_epochs=3",
        "+callbacks.swa._target_=lightning.pytorch.callbacks.StochasticWeightAveraging",
        "+callbacks.swa.swa_lrs=0.01",
        "+callbacks.swa.swa_epoch_start=2",
        "+callbacks.swa.annealing_epochs=1",
    )
    swa = callback(trainer, StochasticWeightAveraging)
    assert swa.n_averaged is not None and int(swa.n_averaged) == 2  # the 2nd and 3rd epochs (1-based start)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.01)


def test_ema_weight_averaging_leaves_the_module_with_the_average(cfg_factory):
    from lightning.pytorch.callbacks import EMAWeightAveraging

    task, trainer, before = fit_with(
        cfg_factory,
        "+callbacks.ema._target_=lightning.pytorch.callbacks.EMAWeightAveraging",
        "+callbacks.ema.decay=0.5",
    )
    ema = callback(trainer, EMAWeightAveraging)
    assert int(ema._average_model.n_averaged) == trainer.global_step == 14
    averaged = dict(ema._average_model.module.named_parameters())
    assert all(torch.equal(p, averaged[n]) for n, p in task.named_parameters())


def test_learning_rate_finder_sets_the_rate_it_found(cfg_factory):
    from lightning.pytorch.callbacks import LearningRateFinder

    task, trainer, _ = fit_with(
        cfg_factory,
        "+callbacks.lr_find._target_=lightning.pytorch.callbacks.LearningRateFinder",
        "+callbacks.lr_find.num_training_steps=20",
        "+callbacks.lr_find.update_attr=true",
        "+callbacks.lr_find.early_stop_threshold=null",
        "data.batch_size=8",
        "trainer.max_epochs=1",
    )
    finder = callback(trainer, LearningRateFinder).optimal_lr
    suggested = finder.suggestion()
    assert len(finder.results["lr"]) == 20 and suggested is not None and suggested != pytest.approx(1e-3)
    assert task.lr == suggested == trainer.optimizers[0].param_groups[0]["lr"]


def test_gradient_accumulation_scheduler_changes_the_steps_per_epoch(cfg_factory):
    _, trainer, _ = fit_with(
        cfg_factory,
        "+callbacks.accumulate._target_=lightning.pytorch.callbacks.GradientAccumulationScheduler",
        "+callbacks.accumulate.scheduling={0:1,1:7}",
    )
    assert trainer.global_step == 7 + 1  # 7 batches one step each, then all 7 accumulated into one


def test_rich_progress_bar_counts_the_batches(cfg_factory):
    pytest.importorskip("rich")
    from lightning.pytorch.callbacks import RichProgressBar

    datamodule, task, trainer = build(
        cfg_factory(
            *DATA,
            "trainer.enable_progress_bar=true",
            "+callbacks.rich._target_=lightning.pytorch.callbacks.RichProgressBar",
        )
    )
    counter = Counter()
    trainer.callbacks.append(counter)
    trainer.fit(task, datamodule=datamodule)
    assert isinstance(trainer.progress_bar_callback, RichProgressBar)
    assert counter.bar_totals == [(7, 4), (7, 4)] and counter.bar_done == [7, 7]
