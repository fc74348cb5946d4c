"""Evaluate entry point, the notes' `model.evaluate`: a split through a trained checkpoint,
with accuracy, macro and per-class precision/recall/F1, AUROC and a confusion matrix.
`python scripts/evaluate.py ckpt_path=PATH [split=val]` (see conf/evaluate.yaml)."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.classification import (
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from visionlab.app.cli import hydra_entry
from visionlab.app.config import ConfigError
from visionlab.app.runs import batch_logits, build_datamodule, check_data_fits, load_run, pick_device, run_config
from visionlab.training.task import eval_metrics
from visionlab.utils.checks import integer
from visionlab.utils.figures import expected_calibration_error, write_figures
from visionlab.utils.io import atomic_path, atomic_write
from visionlab.utils.plots import confusion_figure

log = logging.getLogger("visionlab")
SPLITS = ("test", "val")


def classification_report(logits: list[Tensor], labels: Tensor, classes: tuple[str, ...]) -> dict[str, Any]:
    """Overall metrics, per-class rows and the confusion matrix of per-batch `logits`.

    The overall metrics are accumulated batch by batch exactly as the task's test step
    does, so for the same checkpoint and split they equal the test metrics training printed.
    """
    n = len(classes)
    metrics, mean_loss = eval_metrics(n, ""), MeanMetric()
    for scores, y in zip(logits, labels.split(len(logits[0]) if logits else 1)):
        metrics.update(scores.softmax(1), y)
        mean_loss.update(F.cross_entropy(scores, y), weight=len(y))
    overall = {k: float(v) for k, v in metrics.compute().items()}
    overall["loss"] = float(mean_loss.compute())
    probs = torch.cat([scores.softmax(1) for scores in logits])
    per_class = {
        name: metric(n, average=None)(probs, labels).tolist()
        for name, metric in (
            ("precision", MulticlassPrecision),
            ("recall", MulticlassRecall),
            ("f1", MulticlassF1Score),
        )
    }
    support = torch.bincount(labels, minlength=n).tolist()
    rows = [
        {"class": c, **{k: v[i] for k, v in per_class.items()}, "support": support[i]} for i, c in enumerate(classes)
    ]
    confusion = MulticlassConfusionMatrix(n)(probs, labels)
    return {"overall": overall, "per_class": rows, "confusion": confusion}


def plot_confusion(confusion: Tensor, classes: tuple[str, ...], path: Path, title: str) -> None:
    """The confusion matrix figure (visionlab.utils.plots) as a PNG file."""
    fig = confusion_figure(confusion, classes, title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def write_report(report: dict[str, Any], classes: tuple[str, ...], out: Path, info: dict[str, Any]) -> None:
    """metrics.json, per_class.csv, confusion_matrix.csv and confusion_matrix.png in `out`."""
    atomic_write(out / "metrics.json", json.dumps({**info, **report["overall"]}, indent=2))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["class", "precision", "recall", "f1", "support"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(report["per_class"])
    atomic_write(out / "per_class.csv", buffer.getvalue())
    rows = [",".join(["true\\predicted", *classes])]
    rows += [",".join([c, *map(str, r.tolist())]) for c, r in zip(classes, report["confusion"])]
    atomic_write(out / "confusion_matrix.csv", "\n".join(rows) + "\n")
    plot_confusion(report["confusion"], classes, out / "confusion_matrix.png", f"{info['split']} split")


def format_report(report: dict[str, Any], split: str) -> str:
    """The printed table: overall figures, then one line per class."""
    o = report["overall"]
    lines = [
        f"{split}: accuracy {o['acc']:.4f}  loss {o['loss']:.4f}  precision {o['precision']:.4f}  "
        f"recall {o['recall']:.4f}  f1 {o['f1']:.4f}  auroc {o['auroc']:.4f}  (macro)",
        f"{'class':<14}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}",
    ]
    lines += [
        f"{r['class']:<14}{r['precision']:>10.4f}{r['recall']:>10.4f}{r['f1']:>10.4f}{r['support']:>9}"
        for r in report["per_class"]
    ]
    return "\n".join(lines)


# The data keys that decide which training images a run held out as its val split.
SPLIT_KEYS = ("_target_", "root", "train_size", "val_size", "split", "split_seed")


def check_held_out(combined: DictConfig, run: DictConfig | None) -> None:
    """split=val is honest only as the split the run held out: refuse data keys that change
    it (the run trained on some of those images), and say so when no run config tells."""
    theirs = OmegaConf.to_container(run.data, resolve=False) if run is not None and run.get("data") else None
    if not isinstance(theirs, dict):
        log.warning(
            "split=val: no run config beside the checkpoint says which images the run held out, so "
            "this val split may hold images it trained on; split=test is safe"
        )
        return
    ours = cast(dict[str, Any], OmegaConf.to_container(combined.data, resolve=False))
    for key in SPLIT_KEYS:
        if ours.get(key) != theirs.get(key):
            raise ConfigError(
                f"split=val with data.{key}={ours.get(key)!r}: the run held out its val split with "
                f"data.{key}={theirs.get(key)!r}, so this one would hold images it trained on; "
                "drop the override or use split=test"
            )


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Run the chosen split, print the report and write it into the output folder."""
    split = cfg.get("split", "test")
    if split not in SPLITS:
        raise ConfigError(f"split={split!r} is not allowed; expected one of {', '.join(SPLITS)}")
    device = pick_device(cfg.get("device", "auto"))
    model, combined = load_run(cfg)
    if split == "val":
        check_held_out(combined, run_config(model.path))
    datamodule = build_datamodule(combined)
    check_data_fits(model, datamodule)
    images, labels = datamodule.splits[split]
    if len(labels) == 0:
        raise ConfigError(f"split={split} is empty for this data config")
    logits = batch_logits(model, images, datamodule.eval_batch_size, device)
    report = classification_report(logits, labels, model.classes)
    probs = torch.cat([scores.softmax(1) for scores in logits])
    report["overall"]["ece"] = expected_calibration_error(probs, labels)
    out = Path(combined.paths.output_dir)
    write_report(report, model.classes, out, {"ckpt_path": str(model.path), "split": split, "size": len(labels)})
    write_figures(out, images, probs, labels, model.classes, report["per_class"])
    print(format_report(report, split))
    log.info(
        "Wrote metrics.json, per_class.csv, confusion_matrix.csv/png, mistakes.png/csv, per_class.png "
        "and reliability.png to %s",
        out,
    )
    return report["overall"]


CHECKS = (integer("seed", 0),)  # evaluate.yaml's own; the checkpoint's data and model check theirs
main = hydra_entry("evaluate", evaluate, checks=CHECKS)

if __name__ == "__main__":
    main()
