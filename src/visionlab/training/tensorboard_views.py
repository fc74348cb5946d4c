"""TensorBoard views that tell a run's story: the HPARAMS entry with `hp_metric`, the
model graph, a confusion matrix and labelled sample images every few validation epochs, the
first conv layer's filters, optional weight and gradient histograms, and evaluate's
pictures (mistakes, per-class bars, reliability) at fit end and test end.

Everything runs at fit start or at an epoch's end, never per step; the images cost one
extra forward pass over (the first `max_images` of) the validation split each time they are
drawn. Each callback does nothing when the run has no TensorBoard logger, and
only rank 0 writes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from matplotlib.figure import Figure
from torch import Tensor, nn
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid

from visionlab.training.trainer_state import datamodule_of
from visionlab.utils.errors import ConfigError
from visionlab.utils.figures import (
    confident_mistakes,
    expected_calibration_error,
    mistakes_figure,
    per_class_figure,
    per_class_scores,
    reliability_figure,
)
from visionlab.utils.plots import confusion_figure


def tensorboard_loggers(trainer: Trainer) -> list[TensorBoardLogger]:
    """The run's TensorBoard loggers; empty on ranks other than 0."""
    if not trainer.is_global_zero:
        return []
    return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


def tensorboard_writer(trainer: Trainer) -> SummaryWriter | None:
    """The first TensorBoard logger's writer, or None."""
    loggers = tensorboard_loggers(trainer)
    return loggers[0].experiment if loggers else None


@contextmanager
def evaluating(net: nn.Module, grad: bool = False) -> Iterator[nn.Module]:
    """`net` in eval mode (gradients off unless `grad`), then back to its previous mode."""
    was_training = net.training
    net.eval()
    try:
        with torch.set_grad_enabled(grad):
            yield net
    finally:
        net.train(was_training)


def task_net(pl_module: LightningModule) -> nn.Module:
    """The classifier net of a task (its `net`), or the LightningModule itself."""
    net = getattr(pl_module, "net", None)
    return net if isinstance(net, nn.Module) else pl_module


def net_inputs(trainer: Trainer, net: nn.Module, images: Tensor) -> Tensor:
    """uint8 images as the net sees them in evaluation: normalised, on its device, in the
    dtype of the Trainer's precision (float64 for 64-true), as Lightning's loops convert batches."""
    x = datamodule_of(trainer).transform(train=False)(images.to(next(net.parameters()).device))
    return trainer.precision_plugin.convert_input(x)


def validation_split(trainer: Trainer) -> tuple[Tensor, Tensor] | None:
    """The datamodule's uint8 validation images and labels (test split when val is empty)."""
    splits = getattr(datamodule_of(trainer), "splits", None) or {}
    for name in ("val", "test"):
        if name in splits and len(splits[name][1]):
            return splits[name]
    return None


def predict_probabilities(trainer: Trainer, net: nn.Module, images: Tensor) -> Tensor:
    """Class probabilities of every uint8 image, in evaluation batches, on the CPU."""
    batch = getattr(datamodule_of(trainer), "eval_batch_size", 1000)
    with evaluating(net):
        probs = [
            net(net_inputs(trainer, net, images[i : i + batch])).softmax(1).float().cpu()
            for i in range(0, len(images), batch)
        ]
    return torch.cat(probs)


def predict_classes(trainer: Trainer, net: nn.Module, images: Tensor) -> Tensor:
    """Predicted class of every uint8 image, in evaluation batches."""
    return predict_probabilities(trainer, net, images).argmax(1)


def confusion_matrix(preds: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """counts[true, predicted]."""
    index = labels.long() * num_classes + preds.long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def samples_figure(images: Tensor, preds: Tensor, labels: Tensor, classes: Sequence[str]) -> Figure:
    """A grid of images titled 'predicted / true', green when right and red when wrong."""
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    fig = Figure(figsize=(1.8 * cols, 1.9 * rows), dpi=80)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, pred, true in zip(axes, images, preds.tolist(), labels.tolist()):
        pixels = image.permute(1, 2, 0).numpy()
        ax.imshow(pixels[..., 0] if pixels.shape[2] == 1 else pixels, cmap="gray")
        ax.set_title(f"{classes[pred]} / {classes[true]}", fontsize=7, color="green" if pred == true else "red")
    fig.tight_layout()
    return fig


def filters_image(weight: Tensor, size: int = 24) -> Tensor:
    """A conv weight (out, in, kh, kw) as one CHW grid image, each filter min-max scaled."""
    w = weight.detach().float().cpu()
    if w.shape[1] not in (1, 3):
        w = w.mean(1, keepdim=True)
    low = w.amin((1, 2, 3), keepdim=True)
    high = w.amax((1, 2, 3), keepdim=True)
    w = (w - low) / (high - low).clamp_min(1e-12)
    w = F.interpolate(w, scale_factor=max(1, size // max(w.shape[-2:])), mode="nearest")
    return make_grid(w, nrow=math.ceil(math.sqrt(len(w))), padding=2, pad_value=1.0)


class HParamsMetric(Callback):
    """Puts the run in TensorBoard's HPARAMS tab with `hp_metric` = the best `monitor` so far,
    so the tab ranks the jobs of a sweep. The hyperparameters are those already given to
    the logger (train.py logs the composed config before fitting)."""

    def __init__(self, monitor: str = "val/acc", mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ConfigError(f"HParamsMetric mode={mode!r} is unknown; allowed: max, min")
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None

    def state_dict(self) -> dict[str, float | None]:
        return {"best": self.best}  # a resumed run goes on from its best so far

    def load_state_dict(self, state_dict: dict[str, float | None]) -> None:
        self.best = state_dict.get("best")

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for logger in tensorboard_loggers(trainer):
            params = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in logger.hparams.items()}
            logger.log_hyperparams(params, {"hp_metric": float("nan")}, step=trainer.global_step)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logged = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or logged is None:
            return
        value = float(logged)
        if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            self.best = value
        for logger in tensorboard_loggers(trainer):
            logger.log_metrics({"hp_metric": self.best}, step=trainer.global_step)


class ModelGraph(Callback):
    """The net's graph (traced on two validation images) in TensorBoard's GRAPHS tab."""

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer, split = tensorboard_writer(trainer), validation_split(trainer)
        if writer is None or split is None:
            return
        net = task_net(pl_module)
        x = net_inputs(trainer, net, split[0][:2])
        with evaluating(net), warnings.catch_warnings():
            # TensorBoard's graph still comes from torch.jit.trace, deprecated in torch 2.x
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace", category=FutureWarning)
            try:
                writer.add_graph(net, x)
            except Exception as err:  # a net jit cannot trace still trains; the graph is optional
                rank_zero_warn(f"ModelGraph: could not trace the model ({type(err).__name__}: {err})")


class ValidationImages(Callback):
    """Every `every_n_epochs` validation epochs, and after the last one: a confusion matrix
    of the validation split (its first `max_images`) and `samples` images titled with
    predicted / true class.

    Each drawing costs an extra forward pass and two matplotlib figures (about 1-4 s on a
    CPU), as much as a whole MLP epoch, so they are thinned out; the last validated epoch
    is always drawn, when training ends (before early stopping restores the best weights).
    """

    def __init__(self, samples: int = 16, max_images: int | None = None, every_n_epochs: int = 1) -> None:
        if samples < 0 or every_n_epochs < 1 or (max_images is not None and max_images < 1):
            raise ConfigError(
                f"ValidationImages samples={samples}, max_images={max_images}, every_n_epochs={every_n_epochs}: "
                "expected samples >= 0, max_images >= 1 or null, every_n_epochs >= 1"
            )
        self.samples, self.max_images, self.every_n_epochs = samples, max_images, every_n_epochs
        self._undrawn_epoch: int | None = None  # the last validated epoch, while not drawn

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._undrawn_epoch = trainer.current_epoch
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._draw(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._undrawn_epoch is not None:
            self._draw(trainer, pl_module)

    def _draw(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch, self._undrawn_epoch = self._undrawn_epoch, None
        writer, split = tensorboard_writer(trainer), validation_split(trainer)
        if writer is None or split is None:
            return
        images, labels = (t[: self.max_images] for t in split)
        classes = datamodule_of(trainer).classes
        preds = predict_classes(trainer, task_net(pl_module), images)
        writer.add_figure(
            "val/confusion_matrix", confusion_figure(confusion_matrix(preds, labels, len(classes)), classes), epoch
        )
        if self.samples:
            n = self.samples
            writer.add_figure("val/samples", samples_figure(images[:n], preds[:n], labels[:n], classes), epoch)


class InsightFigures(Callback):
    """evaluate's pictures in TensorBoard: the most confident mistakes, per-class
    precision/recall/F1 and the reliability diagram (with the ECE as a scalar), of the
    validation split when fitting ends and of the test split when testing ends; one extra
    forward pass over the first `max_images` images each time."""

    def __init__(self, max_images: int | None = None, pairs: int = 3, per_pair: int = 8) -> None:
        if (max_images is not None and max_images < 1) or pairs < 1 or per_pair < 1:
            raise ConfigError(
                f"InsightFigures max_images={max_images}, pairs={pairs}, per_pair={per_pair}: "
                "expected max_images >= 1 or null, pairs >= 1, per_pair >= 1"
            )
        self.max_images, self.pairs, self.per_pair = max_images, pairs, per_pair

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log(trainer, pl_module, "val", validation_split(trainer))

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        splits = getattr(datamodule_of(trainer), "splits", None) or {}
        self._log(trainer, pl_module, "test", splits.get("test"))

    def _log(
        self, trainer: Trainer, pl_module: LightningModule, stage: str, split: tuple[Tensor, Tensor] | None
    ) -> None:
        writer = tensorboard_writer(trainer)
        if writer is None or split is None or not len(split[1]):
            return
        images, labels = (t[: self.max_images] for t in split)
        classes = tuple(datamodule_of(trainer).classes)
        probs = predict_probabilities(trainer, task_net(pl_module), images)
        step = trainer.global_step
        found = confident_mistakes(probs, labels, self.pairs, self.per_pair)
        writer.add_figure(f"{stage}/mistakes", mistakes_figure(images, found, classes), step)
        writer.add_figure(f"{stage}/per_class", per_class_figure(per_class_scores(probs, labels, classes)), step)
        writer.add_figure(f"{stage}/reliability", reliability_figure(probs, labels), step)
        writer.add_scalar(f"{stage}/ece", expected_calibration_error(probs, labels), step)


class ConvFilters(Callback):
    """The first Conv2d layer's filters as one image after each training epoch (CNNs only)."""

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = tensorboard_writer(trainer)
        conv = next((m for m in task_net(pl_module).modules() if isinstance(m, nn.Conv2d)), None)
        if writer is not None and conv is not None:
            writer.add_image("model/first_conv_filters", filters_image(conv.weight), trainer.current_epoch)


class Histograms(Callback):
    """Weight and gradient histograms after each training epoch; switched on by
    `logger.histograms=true` (histograms make event files big).

    Lightning frees the gradients before validation, so the gradients shown are those of
    the training loss on the first `probe_size` training images at the epoch's end weights,
    computed in eval mode (BatchNorm statistics untouched, dropout off): one extra
    forward/backward pass per epoch instead of a hook on every step.
    """

    def __init__(self, enabled: bool = True, probe_size: int = 256) -> None:
        if probe_size < 1:
            raise ConfigError(f"Histograms probe_size={probe_size} must be >= 1")
        self.enabled, self.probe_size = enabled, probe_size

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = tensorboard_writer(trainer) if self.enabled else None
        if writer is None:
            return
        epoch = trainer.current_epoch
        params = dict(task_net(pl_module).named_parameters())
        grads = probe_gradients(trainer, pl_module, self.probe_size)
        for name, param in params.items():
            writer.add_histogram(f"weights/{name}", param.detach(), epoch)
            if name in grads:
                writer.add_histogram(f"grads/{name}", grads[name], epoch)


def probe_gradients(trainer: Trainer, pl_module: LightningModule, size: int) -> dict[str, Tensor]:
    """Gradients of the loss on the first `size` training images (`.grad` is not touched)."""
    splits = getattr(datamodule_of(trainer), "splits", None) or {}
    if "train" not in splits:
        return {}
    net = task_net(pl_module)
    images, labels = (t[:size] for t in splits["train"])
    criterion = getattr(pl_module, "criterion", F.cross_entropy)
    params = {name: p for name, p in net.named_parameters() if p.requires_grad}
    with evaluating(net, grad=True):
        logits = net(net_inputs(trainer, net, images))
        grads = torch.autograd.grad(
            criterion(logits, labels.to(logits.device)), list(params.values()), allow_unused=True
        )
    return {name: g for name, g in zip(params, grads) if g is not None}
