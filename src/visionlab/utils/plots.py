"""Figures shared by the entry points and the TensorBoard views (matplotlib's object API,
no pyplot state, so they are safe in any process)."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure
from torch import Tensor


def confusion_figure(counts: Tensor, classes: Sequence[str], title: str | None = None) -> Figure:
    """Confusion matrix, true classes as rows: coloured by row share (recall on the diagonal),
    annotated with counts."""
    n = len(classes)
    rates = counts.float() / counts.sum(1, keepdim=True).clamp_min(1)
    fig = Figure(figsize=(1.0 + 0.6 * n, 0.8 + 0.6 * n), dpi=90)
    ax = fig.subplots()
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    for t in range(n):
        for p in range(n):
            if counts[t, p]:
                ax.text(
                    p,
                    t,
                    str(int(counts[t, p])),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if rates[t, p] > 0.5 else "black",
                )
    fig.tight_layout()
    return fig
