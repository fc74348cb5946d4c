"""The one LightningModule: trains any classifier net with a loss, optional weight
penalties, metrics, and the optimizer and scheduler the config asks for.

Lightning's usual shape: `training_step` gets one (x, y) batch and returns its loss,
Lightning does backward, clipping, accumulation, precision and the optimizer step, so every
Trainer flag and callback behaves as Lightning documents. Training loss and accuracy sums
stay in a device buffer (kept in checkpoints, so a mid-epoch resume keeps its partial
sums) and are logged once per epoch; the per-step loss is logged as `train/loss_step` at
the steps Lightning writes to its loggers (every `trainer.log_every_n_steps`).

A training step never waits for the device (no `.item()`, `bool(tensor)` or host copy): on
a GPU the host queues the next step while the device runs this one. The finiteness of
the loss is checked where a sync is paid anyway: at the steps written to the loggers, and
before validation and the epoch's end, i.e. before any checkpoint of the epoch is saved.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from lightning import LightningModule
from lightning.pytorch.core.saving import load_hparams_from_tags_csv, load_hparams_from_yaml
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

from visionlab.models.tta import TTA_MODES, tta_scores
from visionlab.training.callbacks import averaged_model
from visionlab.training.checkpoint import METADATA_KEY, CheckpointError, build_net, checkpoint_metadata, read_checkpoint
from visionlab.training.trainer_state import (
    batches_done,
    datamodule_of,
    default_map_location,
    loggers_write_this_step,
)
from visionlab.utils.checks import Check, Lookup, fraction, non_negative, one_of, positive, run_checks
from visionlab.utils.errors import ConfigError
from visionlab.utils.seeding import derive_seed

LOSSES = ("cross_entropy", "hinge")
EVAL_METRICS = ("loss", "acc", "precision", "recall", "f1", "auroc")
# Everything the task logs per epoch: what schedulers and callbacks may monitor.
LOGGED_METRICS = ("train/loss", "train/acc", *(f"{stage}/{m}" for stage in ("val", "test") for m in EVAL_METRICS))
OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
DROPOUT_SALT = 2  # the RNG stream of dropout and other in-model randomness (visionlab.utils.seeding)
# The optimizer group names a torch.optim class; what the task passes any of them.
OPTIMIZER_CHECKS = (positive("lr"), non_negative("weight_decay"), fraction("momentum"))


@dataclass
class Schedule:
    """A learning-rate scheduler factory and when Lightning steps it.

    interval: 'step' (after every optimizer step) or 'epoch';
    monitor: the logged metric passed to schedulers such as ReduceLROnPlateau.
    """

    CHECKS: ClassVar[tuple[Check, ...]] = (one_of("interval", ("step", "epoch"), "step or epoch"),)

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


# torch.optim classes with fused CUDA kernels: one kernel per step for all parameters
FUSED_ON_CUDA = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


def fused_kernels(factory: Callable[..., Optimizer], device: torch.device) -> dict[str, bool]:
    """`{"fused": True}` for an optimizer with fused kernels on a CUDA device, unless the config
    chose `fused` or `foreach` itself; else nothing (torch's own default: foreach on CUDA)."""
    cls, chosen = getattr(factory, "func", factory), getattr(factory, "keywords", None) or {}
    if device.type != "cuda" or "fused" in chosen or "foreach" in chosen:
        return {}
    return {"fused": True} if isinstance(cls, type) and issubclass(cls, FUSED_ON_CUDA) else {}


def hard_labels(y: Tensor) -> Tensor:
    """Class indices of `y`: itself, or the argmax of soft labels (N, C) from mixup/cutmix."""
    return y.argmax(1) if y.ndim == 2 else y


def _constructor_hparams(cls: type, hparams_file: str | Path | None) -> dict[str, Any]:
    """The arguments of `cls`'s constructor found in a Lightning hparams file (.yaml or .csv)."""
    if hparams_file is None:
        return {}
    suffix = Path(hparams_file).suffix.lower()
    if suffix not in (".yaml", ".yml", ".csv"):
        raise ConfigError(f"hparams_file={hparams_file}: expected a .yaml, .yml or .csv file")
    if not Path(hparams_file).is_file():
        raise ConfigError(f"hparams_file={hparams_file}: no such file")
    hparams = (
        load_hparams_from_tags_csv(hparams_file)
        if suffix == ".csv"
        else load_hparams_from_yaml(hparams_file, use_omegaconf=False)
    )
    accepted = inspect.signature(cls).parameters
    return {k: v for k, v in (hparams or {}).items() if k in accepted and k != "net"}


class ClassifierTask(LightningModule):
    """Train, validate and test `net`, an nn.Module mapping images to class scores.

    Labels are class indices (N,) or, for training, soft labels (N, C) whose rows sum to 1
    (mixup, cutmix): cross-entropy takes them as they are, accuracy counts their argmax.
    """

    CHECKS: ClassVar[tuple[Check, ...]] = (
        one_of("loss", LOSSES),
        fraction("label_smoothing"),
        non_negative("l1"),
        non_negative("l2"),
        one_of("tta", TTA_MODES),
    )
    # The net's config (`_target_` and arguments), stored in checkpoints so they can rebuild it.
    model_config: dict[str, Any] | None = None

    @staticmethod
    def check_config(lookup: Lookup) -> None:
        """What the task needs of the groups it is built with: optimizer and schedule
        arguments, monitored metrics that it logs, and hard labels for the hinge loss."""
        run_checks(OPTIMIZER_CHECKS, lookup, "optimizer.")
        run_checks(Schedule.CHECKS, lookup, "scheduler.")
        callbacks = lookup("callbacks") or {}
        monitored = [
            ("scheduler.monitor", lookup("scheduler.monitor")),
            *(
                (f"callbacks.{name}.monitor", cb.get("monitor"))
                for name, cb in callbacks.items()
                if isinstance(cb, Mapping)
            ),
        ]
        for key, value in monitored:
            if value is not None and value not in LOGGED_METRICS:
                raise ConfigError(f"{key}={value!r} is never logged; expected one of {', '.join(LOGGED_METRICS)}")
        no_validation = next((f"{k}=0" for k in ("trainer.limit_val_batches", "data.val_size") if lookup(k) == 0), None)
        monitor = lookup("scheduler.monitor")
        if no_validation and lookup("scheduler.factory") is not None and str(monitor).startswith("val/"):
            # callbacks that monitor val/* wait for a validation; a scheduler stepping on one fails
            raise ConfigError(
                f"scheduler.monitor={monitor} is never logged with {no_validation} (no validation); "
                "monitor a train/* metric or choose another scheduler"
            )
        mixing = [k for k in ("mixup", "cutmix") if lookup(f"data.augment.{k}")]
        if mixing and lookup("task.loss") == "hinge":
            raise ConfigError(
                f"task.loss=hinge cannot learn from the soft labels of data.augment.{mixing[0]}; "
                "use task.loss=cross_entropy or switch mixing off"
            )

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory | None = None,
        scheduler: Schedule | None = None,
        num_classes: int | None = None,
        loss: str = "cross_entropy",
        label_smoothing: float = 0.0,
        l1: float = 0.0,
        l2: float = 0.0,
        channels_last: bool = False,
        seed: int = 0,
        tta: str = "none",
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ConfigError(f"task.loss={loss!r} is unknown; allowed: {', '.join(LOSSES)}")
        self.net = net
        self.optimizer_factory = optimizer
        # the learning rate, where Lightning's LearningRateFinder(update_attr=True) finds and sets it
        self.lr: float | None = (getattr(optimizer, "keywords", None) or {}).get("lr")
        self.schedule = scheduler if scheduler is not None and scheduler.factory is not None else None
        num_classes = num_classes or cast(int, net.num_classes)
        self.loss_name = loss
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
        self._train_sums: Tensor  # loss*n, hits, n of the epoch so far
        self.register_buffer("_train_sums", torch.zeros(3))
        self.seed = seed
        self.tta = tta  # test and predict steps (and evaluate/predict/serve, from the checkpoint); not validation
        # (global step, epoch, detached loss) of the steps whose finiteness is not yet checked
        self._unchecked: list[tuple[int, int, Tensor]] = []

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
    def _generator(self) -> torch.Generator:
        """The device's default generator (dropout's source). Looked up, not stored: a
        Generator attribute would not pass to ddp_spawn's processes."""
        device = self.device
        return torch.cuda.default_generators[device.index or 0] if device.type == "cuda" else torch.default_generator

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """The loss of one batch (plus penalties); Lightning does backward and the step.

        The RNG (dropout's source) is seeded from (seed, epoch, batch index) first, so a
        batch draws the same numbers after any resume and whatever the accumulation.
        """
        x, y = batch
        if y.ndim == 2 and self.loss_name == "hinge":
            raise ConfigError("task.loss=hinge cannot take soft labels (mixup/cutmix); use task.loss=cross_entropy")
        self._generator().manual_seed(derive_seed(derive_seed(self.seed, self.current_epoch, DROPOUT_SALT), batch_idx))
        logits = self.net(x.contiguous(memory_format=self.memory_format))
        loss = self.criterion(logits, y)
        if self._penalised:
            loss = loss + self.penalty()
        detached = loss.detach()
        self._unchecked.append((self.global_step, self.current_epoch, detached))
        hits = (logits.detach().argmax(1) == hard_labels(y)).sum()
        # new_full: a fill on the device; new_tensor would be a blocking copy from the host
        self._train_sums += torch.stack((detached * len(y), hits.to(detached.dtype), detached.new_full((), len(y))))
        if self._loggers_write_this_step():
            self.log("train/loss_step", detached, on_step=True, on_epoch=False, batch_size=len(y))
            self.check_finite_loss()  # the loggers read the loss back now anyway
        return loss

    def check_finite_loss(self) -> None:
        """Stop training at the first non-finite loss since the last check, naming its step.

        One read-back for all the steps since the last check: called where the host waits
        for the device anyway, and before anything saves the weights of the epoch.
        """
        unchecked, self._unchecked = self._unchecked, []
        if not unchecked:
            return
        finite = torch.isfinite(torch.stack([loss.float() for _, _, loss in unchecked]))
        if bool(finite.all()):
            return
        first = int(finite.logical_not().nonzero()[0])
        step, epoch, loss = unchecked[first]
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        # float16 weights and optimizer state (16-true) underflow: Adam's eps is 0 in them
        fix = (
            "float16 weights (trainer.precision=16-true) overflow and underflow; use trainer.precision="
            "16-mixed or bf16-true"
            if loss.dtype == torch.float16
            else f"lower the learning rate (optimizer.lr={lr:g})"
        )
        raise FloatingPointError(
            f"loss is {loss.item()} at step {step} (epoch {epoch}); training stopped "
            f"and the last good checkpoint kept; {fix}"
        )

    def _loggers_write_this_step(self) -> bool:
        """Whether Lightning writes this step's metrics to its loggers (its own rule, through
        visionlab.training.trainer_state). `self.log` costs about as much as a small model's
        whole step on a CPU, so the step loss is logged only when it will be written (and
        callback_metrics holds the latest written value in between)."""
        return loggers_write_this_step(self.trainer)

    def running_train_metrics(self) -> dict[str, float]:
        """The epoch's training loss and accuracy so far, on this rank (one copy to the
        host: for callbacks that report within an epoch); empty before the first batch."""
        loss, hits, count = self._train_sums.tolist()
        return {"loss": loss / count, "acc": hits / count} if count else {}

    def on_train_start(self) -> None:
        self._unchecked = []  # nothing left over from an interrupted fit

    def on_validation_start(self) -> None:
        self.check_finite_loss()  # before validation, whose end saves checkpoints

    def on_train_epoch_end(self) -> None:
        self.check_finite_loss()  # before the checkpoint callbacks' epoch-end hooks (Lightning calls them after this)
        # clone: on one device reduce() returns the buffer itself, which zero_() would clear
        sums = self.trainer.strategy.reduce(self._train_sums.clone(), reduce_op="sum")
        self._train_sums.zero_()
        count = sums[2].clamp_min(1)
        # values are already reduced over ranks; sync_dist only averages identical numbers
        self.log_dict({"train/loss": sums[0] / count, "train/acc": sums[1] / count}, sync_dist=True)

    # --- validation and test -----------------------------------------------------------
    def _eval_step(
        self, batch: tuple[Tensor, Tensor], metrics: MetricCollection, mean_loss: MeanMetric, tta: str = "none"
    ) -> None:
        x, y = batch
        y = hard_labels(y)
        logits = tta_scores(self.net, x.contiguous(memory_format=self.memory_format), tta)
        mean_loss.update(
            F.cross_entropy(logits, y)
            if isinstance(self.criterion, nn.CrossEntropyLoss)
            else self.criterion(logits, y),
            weight=len(y),
        )
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
        self._eval_step(batch, self.test_metrics, self.test_loss, self.tta)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test", self.test_metrics, self.test_loss)

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return tta_scores(self.net, x, self.tta).softmax(1)

    # --- checkpoints --------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Make every checkpoint, weights-only ones too, self-describing (visionlab.training.checkpoint)."""
        try:
            trainer: Any = self.trainer
            datamodule = datamodule_of(trainer)
        except RuntimeError:  # not attached to a Trainer: the metadata has no data part
            trainer = datamodule = None
        checkpoint[METADATA_KEY] = checkpoint_metadata(self.model_config, datamodule, self.net, self.tta)
        averaged = averaged_model(trainer) if trainer is not None else None
        if averaged is not None and "current_model_state" not in checkpoint:
            # a weights-only checkpoint, which Lightning's WeightAveraging leaves alone: it gets
            # the averaged weights too, the ones validation scored
            checkpoint["state_dict"] = averaged.state_dict()

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | Path,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> ClassifierTask:
        """The task of a visionlab checkpoint, its net rebuilt from the file's own metadata.

        Takes Lightning's arguments as Lightning does: `map_location` (default: where the
        tensors were saved, the CPU when that device is missing; the task moves to their
        device), `hparams_file` (a .yaml or .csv of constructor arguments; keys the
        constructor lacks are dropped), `strict` (default: `strict_loading`) and
        `weights_only` (default True: visionlab loads weights only). `kwargs` (optimizer,
        scheduler, loss, ...) go to the constructor and win over the file's.
        """
        checkpoint = read_checkpoint(
            checkpoint_path,
            map_location=map_location or default_map_location,
            weights_only=True if weights_only is None else weights_only,
        )
        meta = checkpoint[METADATA_KEY]
        if not meta.get("model") or not meta.get("classes"):
            raise CheckpointError(
                f"ckpt_path={checkpoint_path}: has no visionlab model metadata to rebuild its net from"
            )
        net = build_net(meta["model"], tuple(meta["input_shape"]), len(meta["classes"]))
        task = cls(net, **{"tta": meta.get("tta", "none"), **_constructor_hparams(cls, hparams_file), **kwargs})
        task.model_config = dict(meta["model"])
        task.load_state_dict(checkpoint["state_dict"], strict=task.strict_loading if strict is None else strict)
        tensor = next((t for t in checkpoint["state_dict"].values() if isinstance(t, Tensor)), None)
        return task if tensor is None else task.to(tensor.device)

    # --- optimizer wiring -------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ConfigError("ClassifierTask has no optimizer to train with; pass optimizer=...")
        kwargs = {} if self.lr is None else {"lr": self.lr}
        clipped_fp16 = str(self.trainer.precision) == "16-mixed" and bool(self.trainer.gradient_clip_val)
        # Lightning refuses to clip the gradients of an optimizer that unscales them itself (fused)
        kwargs.update({} if clipped_fp16 else fused_kernels(self.optimizer_factory, self.device))
        optimizer = self.optimizer_factory(self._param_groups(), **kwargs)
        for group in optimizer.param_groups:
            group["lr"] *= group.get("lr_scale", 1.0)  # before any scheduler reads it
        if self.schedule is None or self.schedule.factory is None:
            return optimizer
        factory = self.schedule.factory
        schedule_kwargs: dict[str, Any] = {}
        accepted = inspect.signature(factory).parameters
        if "total_steps" in accepted:
            schedule_kwargs["total_steps"] = self.total_optimizer_steps()
        if "cycle_momentum" in accepted and "cycle_momentum" not in getattr(factory, "keywords", {}):
            # cycle momentum only where the optimizer has some: Adagrad has none, and plain
            # SGD (momentum 0) must not silently become momentum SGD
            defaults = optimizer.defaults
            schedule_kwargs["cycle_momentum"] = "betas" in defaults or defaults.get("momentum", 0) > 0
        scales = [group.get("lr_scale", 1.0) for group in optimizer.param_groups]
        max_lr = getattr(factory, "keywords", {}).get("max_lr")
        if "max_lr" in accepted and isinstance(max_lr, int | float) and any(scale != 1.0 for scale in scales):
            # one-cycle sets every group's lr from max_lr: scale it per group, or a
            # fine-tuned backbone would get the head's learning rate
            schedule_kwargs["max_lr"] = [max_lr * scale for scale in scales]
        config = {"scheduler": factory(optimizer, **schedule_kwargs), "interval": self.schedule.interval}
        if self.schedule.monitor:
            config["monitor"] = self.schedule.monitor
        return {"optimizer": optimizer, "lr_scheduler": config}

    def _param_groups(self) -> Any:
        """The net's own parameter groups when it defines `param_groups()` (layer-wise
        learning rates: each group's lr is the optimizer's lr times its `lr_scale`), else
        all parameters in one group."""
        groups = getattr(self.net, "param_groups", None)
        return groups() if callable(groups) else self.parameters()

    def setup(self, stage: str) -> None:
        """An in-memory DataModule is told where the training pass stands (what its
        checkpointed state saves); nets that adapt their own input (pretrained backbones)
        learn the data's normalisation."""
        datamodule = datamodule_of(self.trainer)
        follow = getattr(datamodule, "follow_position", None)
        if callable(follow):  # the in-memory DataModules save the loader's position in the epoch
            follow(partial(batches_done, self.trainer))
        adapt = getattr(self.net, "set_input_normalization", None)
        if callable(adapt) and getattr(datamodule, "mean", None):
            adapt(datamodule.mean, datamodule.std)

    def total_optimizer_steps(self) -> int:
        """Optimizer steps in the whole fit as Lightning counts them (limits, accumulation,
        max_steps and devices applied). At least 8, so a one-cycle schedule stays well
        defined on the tiniest smoke runs."""
        steps = self.trainer.estimated_stepping_batches
        if math.isinf(steps):
            raise ConfigError("scheduler=onecycle needs a finite run: set trainer.max_epochs or trainer.max_steps")
        return max(int(steps), 8)
