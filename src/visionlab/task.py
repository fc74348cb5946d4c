"""The one LightningModule: trains any classifier net with a loss, optional weight
penalties, metrics, and the optimizer and scheduler the config asks for.

Speed by design: training uses manual optimization so a step can receive a chunk of k
batches from the in-memory loader and run them as k ordinary optimizer steps, paying
Lightning's per-step cost once per chunk. Training loss and accuracy accumulate in device
tensors and are logged once per epoch, so no step waits on a host sync.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from lightning import LightningModule
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from visionlab.checkpoint import METADATA_KEY, checkpoint_metadata
from visionlab.seeding import derive_seed

LOSSES = ("cross_entropy", "hinge")
EVAL_METRICS = ("loss", "acc", "precision", "recall", "f1", "auroc")
# Everything the task logs, per epoch: what schedulers and callbacks may monitor.
LOGGED_METRICS = ("train/loss", "train/acc", *(f"{stage}/{m}" for stage in ("val", "test") for m in EVAL_METRICS))
OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]


@dataclass
class Schedule:
    """A learning-rate scheduler factory and when to step it.

    interval: 'step' (after every optimizer step) or 'epoch' (after validation);
    monitor: the logged metric passed to schedulers such as ReduceLROnPlateau.
    """

    factory: Callable[..., Any] | None = None
    interval: str = "epoch"
    monitor: str | None = None


def eval_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """Accuracy plus macro precision, recall, F1 and AUROC."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "precision": MulticlassPrecision(num_classes, average="macro"),
            "recall": MulticlassRecall(num_classes, average="macro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
            "auroc": MulticlassAUROC(num_classes, average="macro"),
        },
        prefix=prefix,
    )


class ClassifierTask(LightningModule):
    """Train, validate and test `net`, an nn.Module mapping images to class scores."""

    # The net's config (`_target_` and arguments), stored in checkpoints so they can rebuild it.
    model_config: dict[str, Any] | None = None

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: Schedule | None = None,
        num_classes: int | None = None,
        loss: str = "cross_entropy",
        label_smoothing: float = 0.0,
        l1: float = 0.0,
        l2: float = 0.0,
        channels_last: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"task.loss={loss!r} is unknown; allowed: {', '.join(LOSSES)}")
        self.automatic_optimization = False
        self.net = net
        self.optimizer_factory = optimizer
        self.schedule = scheduler if scheduler is not None and scheduler.factory is not None else None
        num_classes = num_classes or getattr(net, "num_classes")
        self.criterion = (
            nn.CrossEntropyLoss(label_smoothing=label_smoothing) if loss == "cross_entropy" else nn.MultiMarginLoss()
        )
        self.l1, self.l2 = l1, l2
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # Keras regularises kernels, not biases or normalisation scales: weights of rank >= 2
        self._penalised = [p for p in net.parameters() if p.ndim >= 2] if (l1 or l2) else []
        self.val_metrics = eval_metrics(num_classes, "val/")
        self.test_metrics = eval_metrics(num_classes, "test/")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.register_buffer("_train_sums", torch.zeros(3))  # loss*n, hits, n of the epoch so far
        self.seed = seed
        self._rng = torch.default_generator
        self._direct = False

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def penalty(self) -> Tensor:
        """L1 (lasso), L2 (ridge) or both (elastic net) on the weights."""
        total = torch.zeros((), device=self.device)
        if self.l1:
            total = total + self.l1 * sum(p.abs().sum() for p in self._penalised)
        if self.l2:
            total = total + self.l2 * sum(p.pow(2).sum() for p in self._penalised)
        return total

    # --- training --------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One Lightning step: every (x, y) batch of the chunk is one optimizer step.

        Before each step the RNG (dropout's source) is seeded from (seed, global step), so
        a step draws the same numbers whatever chunk it is in and after any resume. Losses
        and hits stay on the device; one host sync per chunk checks the loss is finite.
        """
        batches = batch if isinstance(batch, list) else [batch]
        lightning_opt = self.optimizers()
        opt = lightning_opt.optimizer
        step_scheduler = self.lr_schedulers() if self.schedule and self.schedule.interval == "step" else None
        first_step, max_steps = self.trainer.global_step, self.trainer.max_steps
        losses: list[Tensor] = []
        hits: list[Tensor] = []
        sizes: list[int] = []
        for x, y in batches:
            step = first_step + len(sizes)
            if 0 <= max_steps <= step:
                break  # a chunk must not overshoot trainer.max_steps
            self._rng.manual_seed(derive_seed(self.seed, step, salt=2))
            logits = self.net(x.contiguous(memory_format=self.memory_format))
            loss = self.criterion(logits, y)
            if self._penalised:
                loss = loss + self.penalty()
            opt.zero_grad(set_to_none=True)
            if self._direct:
                loss.backward()
                lightning_opt._on_before_step()  # Lightning's step counting (global_step)
                opt.step()
                lightning_opt._on_after_step()
            else:
                self.manual_backward(loss)
                lightning_opt.step()
            if step_scheduler is not None:
                step_scheduler.step()
            losses.append(loss.detach())
            hits.append((logits.detach().argmax(1) == (y.argmax(1) if y.ndim == 2 else y)).sum())  # soft: mixup
            sizes.append(len(y))
        if sizes:
            self._accumulate(torch.stack(losses), torch.stack(hits), sizes, first_step)

    def _accumulate(self, losses: Tensor, hits: Tensor, sizes: list[int], first_step: int) -> None:
        finite = torch.isfinite(losses)
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0])
            lr = self.optimizers().param_groups[0]["lr"]
            raise FloatingPointError(
                f"loss is {losses[bad].item()} at step {first_step + bad} (epoch {self.current_epoch}); "
                f"training stopped and the last good checkpoint kept; lower the learning rate (optimizer.lr={lr:g})"
            )
        n = torch.tensor(sizes, dtype=losses.dtype, device=losses.device)
        self._train_sums += torch.stack(((losses * n).sum(), hits.sum().to(losses.dtype), n.sum()))

    def on_fit_start(self) -> None:
        device = self.device
        self._rng = torch.cuda.default_generators[device.index or 0] if device.type == "cuda" else torch.default_generator
        self._direct = self._wrappers_are_no_ops()

    def _wrappers_are_no_ops(self) -> bool:
        """Whether Lightning's backward and optimizer-step wrappers would do nothing here.

        They matter for loss scaling (16-bit), sharded or distributed strategies and the
        backward/step hooks; otherwise calling torch directly saves about a third of a
        millisecond per step, as much as a small model's whole step on a CPU.
        """
        trainer = self.trainer
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return False
        if type(trainer.strategy) is not SingleDeviceStrategy:
            return False
        hooks = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
        overridden = [is_overridden(h, cb, Callback) for cb in trainer.callbacks for h in hooks]
        return not any(overridden) and not any(is_overridden(h, self, LightningModule) for h in hooks)

    def on_train_epoch_end(self) -> None:
        # clone: on one device reduce() returns the buffer itself, which zero_() would clear
        sums = self.trainer.strategy.reduce(self._train_sums.clone(), reduce_op="sum")
        self._train_sums.zero_()  # kept in checkpoints, so a mid-epoch resume keeps its partial sums
        count = sums[2].clamp_min(1)
        # values are already reduced over ranks; sync_dist only averages identical numbers
        self.log_dict({"train/loss": sums[0] / count, "train/acc": sums[1] / count}, sync_dist=True)
        if self.schedule and self.schedule.interval == "epoch":
            self._step_epoch_scheduler()

    def _step_epoch_scheduler(self) -> None:
        scheduler = self.lr_schedulers()
        monitor = self.schedule.monitor
        if not monitor:
            scheduler.step()
            return
        metrics = self.trainer.callback_metrics
        if monitor not in metrics:
            if self.trainer.sanity_checking or not self.trainer.val_dataloaders:
                return
            raise ValueError(
                f"scheduler.monitor={monitor!r} is never logged; logged metrics: {', '.join(sorted(metrics))}"
            )
        scheduler.step(metrics[monitor])

    # --- validation and test -----------------------------------------------------------
    def _eval_step(self, batch: tuple[Tensor, Tensor], metrics: MetricCollection, mean_loss: MeanMetric) -> None:
        x, y = batch
        logits = self.net(x.contiguous(memory_format=self.memory_format))
        mean_loss.update(F.cross_entropy(logits, y) if isinstance(self.criterion, nn.CrossEntropyLoss)
                         else self.criterion(logits, y), weight=len(y))
        metrics.update(logits.softmax(1), y)

    def _eval_epoch_end(self, stage: str, metrics: MetricCollection, mean_loss: MeanMetric) -> None:
        values = metrics.compute()
        values[f"{stage}/loss"] = mean_loss.compute()
        self.log_dict(values, sync_dist=True)  # torchmetrics already synced: averaging identical values
        metrics.reset()
        mean_loss.reset()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, self.val_loss)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val", self.val_metrics, self.val_loss)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, self.test_loss)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test", self.test_metrics, self.test_loss)

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.net(x).softmax(1)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Make every checkpoint, weights-only ones too, self-describing (visionlab.checkpoint)."""
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        checkpoint[METADATA_KEY] = checkpoint_metadata(self.model_config, datamodule, self.net)

    # --- optimizer wiring -------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self._param_groups())
        for group in optimizer.param_groups:
            group["lr"] *= group.get("lr_scale", 1.0)  # before any scheduler reads it
        if self.schedule is None:
            return optimizer
        kwargs = {}
        accepted = inspect.signature(self.schedule.factory).parameters
        if "total_steps" in accepted:
            kwargs["total_steps"] = self.total_optimizer_steps()
        if "cycle_momentum" in accepted and "cycle_momentum" not in getattr(self.schedule.factory, "keywords", {}):
            # cycle momentum only where the optimizer has some: Adagrad has none, and plain
            # SGD (momentum 0) must not silently become momentum SGD
            defaults = optimizer.defaults
            kwargs["cycle_momentum"] = "betas" in defaults or defaults.get("momentum", 0) > 0
        return [optimizer], [self.schedule.factory(optimizer, **kwargs)]

    def _param_groups(self) -> Any:
        """The net's own parameter groups when it defines `param_groups()` (layer-wise
        learning rates: each group's lr is the optimizer's lr times its `lr_scale`), else
        all parameters in one group."""
        return self.net.param_groups() if hasattr(self.net, "param_groups") else self.parameters()

    def setup(self, stage: str) -> None:
        """Nets that adapt their own input (pretrained backbones) learn the data's normalisation."""
        datamodule = self.trainer.datamodule
        if hasattr(self.net, "set_input_normalization") and getattr(datamodule, "mean", None):
            self.net.set_input_normalization(datamodule.mean, datamodule.std)

    def total_optimizer_steps(self) -> int:
        """Optimizer steps in the whole fit: batches per epoch (not chunks) x epochs, with
        trainer.limit_train_batches (which counts chunks) and max_steps applied. At least 8,
        so a one-cycle schedule stays well defined on the tiniest smoke runs."""
        trainer = self.trainer
        chunks = trainer.estimated_stepping_batches  # also sets up the train loader
        loader = trainer.train_dataloader
        per_epoch = getattr(loader, "num_batches", None)
        if per_epoch is None or trainer.max_epochs is None or trainer.max_epochs < 0:
            return max(int(chunks), 8)
        per_epoch = min(per_epoch, int(trainer.num_training_batches) * getattr(loader, "chunk", 1))
        steps = per_epoch * trainer.max_epochs
        return max(min(steps, trainer.max_steps) if trainer.max_steps > 0 else steps, 8)
