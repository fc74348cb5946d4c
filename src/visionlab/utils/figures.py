"""What a learner looks at after the confusion matrix: the most confident mistakes of the
most-confused class pairs, per-class precision/recall/F1 bars, and a reliability diagram with
its expected calibration error. Used by evaluate (PNG files) and the TensorBoard views.

Figures have a fixed size per content (`DPI` and the figsize below) and are saved without
tight bounding boxes, so a PNG's size in pixels is known in advance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor
from torchmetrics.classification import (
    MulticlassCalibrationError,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)
from torchvision.utils import make_grid

from visionlab.utils.io import atomic_path, atomic_write

DPI = 100
CALIBRATION_BINS = 15  # torchmetrics' default
METRICS = ("precision", "recall", "f1")


def expected_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = CALIBRATION_BINS) -> float:
    """ECE: the gap between confidence and accuracy, averaged over confidence bins (torchmetrics, L1)."""
    return float(MulticlassCalibrationError(probs.shape[1], n_bins=n_bins, norm="l1")(probs, labels))


def reliability_bins(probs: Tensor, labels: Tensor, n_bins: int = CALIBRATION_BINS) -> tuple[Tensor, Tensor, Tensor]:
    """Per confidence bin (equal widths over [0, 1], as torchmetrics bins): mean confidence,
    accuracy and count of the top-1 predictions; empty bins hold zeros."""
    confidence, predicted = probs.max(1)
    bins = (confidence * n_bins).long().clamp(0, n_bins - 1)
    count = torch.bincount(bins, minlength=n_bins).float()
    total_conf = torch.bincount(bins, weights=confidence.float(), minlength=n_bins)
    total_hits = torch.bincount(bins, weights=(predicted == labels).float(), minlength=n_bins)
    safe = count.clamp_min(1)
    return total_conf / safe, total_hits / safe, count


@dataclass(frozen=True)
class ConfusedPair:
    """`true` images predicted as `predicted`: `count` of them; `indices` of the most
    confident ones, most confident first, and their predicted probabilities."""

    true: int
    predicted: int
    count: int
    indices: tuple[int, ...]
    probabilities: tuple[float, ...]


def confident_mistakes(probs: Tensor, labels: Tensor, pairs: int = 3, per_pair: int = 8) -> list[ConfusedPair]:
    """The `pairs` most frequent (true, predicted) confusions, each with its `per_pair` most
    confident wrong predictions. Ties keep the lower class index / image index first."""
    confidence, predicted = probs.max(1)
    wrong = (predicted != labels).nonzero().flatten()
    if len(wrong) == 0:
        return []
    key = labels[wrong] * probs.shape[1] + predicted[wrong]
    found, counts = key.unique(return_counts=True)  # sorted by key: stable tie order
    order = sorted(range(len(found)), key=lambda i: -int(counts[i]))[:pairs]
    out = []
    for i in order:
        members = wrong[key == found[i]]
        # stable sort on descending confidence: equal probabilities keep image order
        ranked = members[torch.sort(-confidence[members], stable=True).indices][:per_pair]
        k = probs.shape[1]
        out.append(
            ConfusedPair(
                int(found[i]) // k,
                int(found[i]) % k,
                int(counts[i]),
                tuple(ranked.tolist()),
                tuple(confidence[ranked].tolist()),
            )
        )
    return out


def mistakes_figure(images: Tensor, found: Sequence[ConfusedPair], classes: Sequence[str]) -> Figure:
    """One row per confused pair (labelled true -> predicted and its count), its most confident
    mistakes left to right, each titled with the predicted probability. A row is one image
    (torchvision's make_grid), not one axes per picture: ten times faster to draw."""
    rows = max(1, len(found))
    cols = max([len(p.indices) for p in found] + [1])
    fig = Figure(figsize=(1.4 * max(cols, 3) + 0.4, 1.9 * rows + 0.4), dpi=DPI)  # room for the row labels
    axes = fig.subplots(rows, 1, squeeze=False)[:, 0]
    for ax in axes:
        ax.axis("off")
    if not found:
        axes[0].text(0.5, 0.5, "no mistakes", ha="center", va="center", transform=axes[0].transAxes)
    for ax, pair in zip(axes, found):
        tiles = make_grid(images[list(pair.indices)], nrow=len(pair.indices), padding=1, pad_value=255)
        ax.imshow(tiles.permute(1, 2, 0).numpy(), extent=(0, len(pair.indices), 1, 0), interpolation="nearest")
        ax.set(xlim=(0, cols), ylim=(1, 0))
        for j, p in enumerate(pair.probabilities):
            ax.text(j + 0.5, -0.03, f"p={p:.2f}", ha="center", va="bottom", fontsize=7)
        ax.text(
            0,
            -0.22,
            f"true {classes[pair.true]} -> predicted {classes[pair.predicted]} ({pair.count} in all)",
            fontsize=8,
            ha="left",
            va="bottom",
        )
    height = fig.get_figheight()
    fig.suptitle("most confident mistakes", fontsize=9, y=1 - 0.05 / height)
    fig.subplots_adjust(left=0.02, right=0.98, top=1 - 0.6 / height, bottom=0.05 / height + 0.02, hspace=0.45)
    return fig


def per_class_scores(probs: Tensor, labels: Tensor, classes: Sequence[str]) -> list[dict[str, Any]]:
    """Rows {class, precision, recall, f1} (torchmetrics, per class), as evaluate's per_class.csv."""
    n = len(classes)
    values = {
        name: metric(n, average=None)(probs, labels).tolist()
        for name, metric in zip(METRICS, (MulticlassPrecision, MulticlassRecall, MulticlassF1Score))
    }
    return [{"class": c, **{m: values[m][i] for m in METRICS}} for i, c in enumerate(classes)]


def per_class_figure(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> Figure:
    """Precision, recall and F1 per class as grouped bars (rows as in evaluate's per_class.csv)."""
    n = len(rows)
    fig = Figure(figsize=(max(4.0, 0.7 * n + 1.5), 3.6), dpi=DPI)
    ax = fig.subplots()
    width = 0.8 / len(METRICS)
    for j, metric in enumerate(METRICS):
        ax.bar([i + (j - 1) * width for i in range(n)], [float(r[metric]) for r in rows], width, label=metric)
    ax.set_xticks(range(n), [str(r["class"]) for r in rows], rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, ncols=len(METRICS), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(bottom=0.3, top=0.85)
    return fig


def reliability_figure(probs: Tensor, labels: Tensor, n_bins: int = CALIBRATION_BINS) -> Figure:
    """Accuracy against confidence per bin, the diagonal being perfect calibration; the ECE
    in the title and the bins' share of images as a second, faint bar."""
    confidence, accuracy, count = reliability_bins(probs, labels, n_bins)
    edges = torch.linspace(0, 1, n_bins + 1)[:-1].tolist()
    fig = Figure(figsize=(4.2, 4.2), dpi=DPI)
    ax = fig.subplots()
    width = 1 / n_bins
    filled = count > 0
    ax.bar(
        edges,
        (count / count.sum().clamp_min(1)).tolist(),
        width,
        align="edge",
        color="lightgray",
        label="share of images",
    )
    ax.bar(
        [e for e, f in zip(edges, filled.tolist()) if f],
        accuracy[filled].tolist(),
        width,
        align="edge",
        edgecolor="navy",
        fill=False,
        label="accuracy",
    )
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.scatter(confidence[filled].tolist(), accuracy[filled].tolist(), s=10, color="crimson", label="mean confidence")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
    ax.set_title(f"reliability (ECE {expected_calibration_error(probs, labels, n_bins):.4f})", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.subplots_adjust(left=0.15, bottom=0.12, top=0.92)
    return fig


def save_png(fig: Figure, path: Path) -> None:
    """`fig` as a PNG at its own size (figsize x DPI), written atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def png_size(fig: Figure) -> tuple[int, int]:
    """(width, height) in pixels of `fig` saved by `save_png`."""
    w, h = fig.get_size_inches()
    return math.floor(w * DPI + 0.5), math.floor(h * DPI + 0.5)


def write_figures(
    out: Path,
    images: Tensor,
    probs: Tensor,
    labels: Tensor,
    classes: Sequence[str],
    per_class: Sequence[Mapping[str, Any]],
    pairs: int = 3,
    per_pair: int = 8,
) -> list[ConfusedPair]:
    """mistakes.png (and mistakes.csv, what it shows), per_class.png and reliability.png in `out`."""
    found = confident_mistakes(probs, labels, pairs, per_pair)
    save_png(mistakes_figure(images, found, classes), out / "mistakes.png")
    lines = ["index,true,predicted,probability"]
    lines += [
        f"{i},{classes[p.true]},{classes[p.predicted]},{q:.6f}"
        for p in found
        for i, q in zip(p.indices, p.probabilities)
    ]
    atomic_write(out / "mistakes.csv", "\n".join(lines) + "\n")
    save_png(per_class_figure(per_class), out / "per_class.png")
    save_png(reliability_figure(probs, labels), out / "reliability.png")
    return found
