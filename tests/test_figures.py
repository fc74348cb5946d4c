"""evaluate's pictures: the mistakes shown, per-class bars, the reliability diagram and ECE."""

from __future__ import annotations

import torch
from PIL import Image
from torchmetrics.classification import MulticlassCalibrationError

from visionlab.utils.figures import (
    confident_mistakes,
    expected_calibration_error,
    mistakes_figure,
    per_class_figure,
    per_class_scores,
    png_size,
    reliability_bins,
    reliability_figure,
    write_figures,
)

CLASSES = ("cat", "dog", "fox")


def table(rows: list[tuple[int, list[float]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels, probabilities) from hand-written (true class, probabilities) rows."""
    return torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows])


# index: true, probabilities (cat, dog, fox)
PREDICTIONS = [
    (0, [0.9, 0.05, 0.05]),  # 0 right
    (0, [0.2, 0.7, 0.1]),  # 1 cat -> dog 0.7
    (0, [0.1, 0.85, 0.05]),  # 2 cat -> dog 0.85
    (0, [0.3, 0.6, 0.1]),  # 3 cat -> dog 0.6
    (1, [0.1, 0.1, 0.8]),  # 4 dog -> fox 0.8
    (1, [0.05, 0.9, 0.05]),  # 5 right
    (2, [0.95, 0.0, 0.05]),  # 6 fox -> cat 0.95
    (1, [0.1, 0.3, 0.6]),  # 7 dog -> fox 0.6
    (2, [0.1, 0.1, 0.8]),  # 8 right
]


def test_mistakes_are_the_most_confident_wrong_ones_of_the_most_confused_pairs():
    labels, probs = table(PREDICTIONS)
    found = confident_mistakes(probs, labels, pairs=2, per_pair=2)
    assert [(p.true, p.predicted, p.count) for p in found] == [(0, 1, 3), (1, 2, 2)]
    assert [p.indices for p in found] == [(2, 1), (4, 7)]
    assert [p.probabilities for p in found] == [
        (torch.tensor(0.85).item(), torch.tensor(0.7).item()),
        (torch.tensor(0.8).item(), torch.tensor(0.6).item()),
    ]
    assert confident_mistakes(probs[[0, 5, 8]], labels[[0, 5, 8]]) == []


def test_evaluate_figures_are_pngs_of_their_figure_size_and_list_what_they_show(tmp_path):
    labels, probs = table(PREDICTIONS)
    images = torch.randint(0, 256, (len(labels), 1, 8, 8), dtype=torch.uint8)
    rows = per_class_scores(probs, labels, CLASSES)
    found = write_figures(tmp_path, images, probs, labels, CLASSES, rows, pairs=3, per_pair=8)
    expected = {
        "mistakes.png": mistakes_figure(images, found, CLASSES),
        "per_class.png": per_class_figure(rows),
        "reliability.png": reliability_figure(probs, labels),
    }
    for name, fig in expected.items():
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        with Image.open(tmp_path / name) as image:
            assert image.size == png_size(fig), name
    # 3 pairs of at most 3 mistakes: (1.4 * 3 + 0.4) x (1.9 * 3 + 0.4) inches at 100 dpi
    assert png_size(expected["mistakes.png"]) == (460, 610)
    lines = (tmp_path / "mistakes.csv").read_text().splitlines()
    assert lines[0] == "index,true,predicted,probability"
    assert [line.split(",")[:3] for line in lines[1:]] == [
        ["2", "cat", "dog"],
        ["1", "cat", "dog"],
        ["3", "cat", "dog"],
        ["4", "dog", "fox"],
        ["7", "dog", "fox"],
        ["6", "fox", "cat"],
    ]
    assert rows[0]["class"] == "cat" and rows[0]["recall"] == 0.25  # 1 of 4 cats found
    assert abs(rows[2]["precision"] - 1 / 3) < 1e-6  # 1 of 3 foxes predicted is one


def test_ece_is_torchmetrics_and_the_diagram_bins_agree_with_it():
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(500, 4, generator=gen) * 2, 1)
    labels = torch.randint(0, 4, (500,), generator=gen)
    reference = MulticlassCalibrationError(4, n_bins=15, norm="l1")(probs, labels)
    assert expected_calibration_error(probs, labels) == float(reference)
    confidence, accuracy, count = reliability_bins(probs, labels)
    assert int(count.sum()) == 500
    by_bins = float(((confidence - accuracy).abs() * count).sum() / 500)
    assert abs(by_bins - float(reference)) < 1e-5
