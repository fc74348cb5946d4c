"""Predict entry point, the notes' `model.predict` with class names: the top-k classes and
their probabilities for image files, or for the first test images.
`python scripts/predict.py ckpt_path=PATH inputs=[a.png,dir/]`, or `predict.from_test=5`
(see conf/predict.yaml)."""

from __future__ import annotations

import csv
import io
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from visionlab.app.cli import hydra_entry
from visionlab.app.config import ConfigError
from visionlab.app.runs import build_datamodule, check_data_fits, load_run, pick_device, probabilities, top_k
from visionlab.data.formats.images import ImageError, background_of, list_images, read_image
from visionlab.utils.checks import Check, integer, one_of, required
from visionlab.utils.explain import explain
from visionlab.utils.extras import needs
from visionlab.utils.io import atomic_write

log = logging.getLogger("visionlab")


def read_inputs(
    inputs: list[str], input_shape: tuple[int, ...], max_pixels: int, background: int
) -> tuple[list[str], Tensor]:
    """Names and uint8 images of the files and folders `inputs`; bad files are reported and skipped."""
    names, images = [], []
    for path in list_images(inputs):
        try:
            images.append(read_image(path, input_shape, max_pixels, background=background))
            names.append(str(path))
        except ImageError as err:
            print(f"skipped {err}", file=sys.stderr)
    if not images:
        raise ConfigError("inputs: no readable image among the inputs")
    return names, torch.stack(images)


def predict(cfg: DictConfig) -> list[dict[str, Any]]:
    """Print the top-k classes per image and write predictions.csv; returns the rows."""
    options = cfg.predict
    inputs = list(cfg.get("inputs") or [])
    if bool(inputs) == bool(options.from_test):
        raise ConfigError("give either inputs=[FILE_OR_FOLDER,...] or predict.from_test=N (N >= 1), not both")
    device = pick_device(cfg.get("device", "auto"))
    model, combined = load_run(cfg)
    labels: list[str | None]
    if options.from_test:
        datamodule = build_datamodule(combined)
        check_data_fits(model, datamodule)
        test_images, test_labels = datamodule.splits["test"]
        count = min(int(options.from_test), len(test_labels))
        images, names = test_images[:count], [f"test[{i}]" for i in range(count)]
        labels = [model.classes[int(y)] for y in test_labels[:count]]
    else:
        names, images = read_inputs(inputs, model.input_shape, int(options.max_pixels), background_of(model.mean))
        labels = [None] * len(names)
    probs = probabilities(model, images, int(options.batch_size), device)
    rows = []
    for name, label, top in zip(names, labels, top_k(probs, model.classes, int(options.top_k))):
        row: dict[str, Any] = {"input": name, "true": label}
        for rank, (cls, p) in enumerate(top, 1):
            row[f"top{rank}"], row[f"p{rank}"] = cls, round(p, 6)
        rows.append(row)
        truth = f"  (true: {label})" if label is not None else ""
        print(f"{name}: " + ", ".join(f"{cls} {p:.3f}" for cls, p in top) + truth)
    out = Path(combined.paths.output_dir) / "predictions.csv"
    buffer = io.StringIO()
    fields = [k for k in rows[0] if k != "true" or options.from_test]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out, buffer.getvalue())
    log.info("Wrote %s", out)
    if cfg.get("explain"):
        true = torch.tensor([model.classes.index(y) for y in labels]) if options.from_test else None
        files = explain(
            model.net,
            images,
            model.transform()(images.to(device)),
            names,
            probs.argmax(1),
            model.classes,
            out.parent / "explain",
            cfg.explain,
            cfg.get("explain_layer"),
            true,
        )
        log.info("Wrote %d heat maps to %s", len(files), out.parent / "explain")
    return rows


# predict.yaml's own keys; the data and model of the checkpoint's run check theirs
CHECKS = (
    integer("seed", 0),
    *required(
        integer("predict.from_test", 0, "an integer >= 0 (0: predict the inputs)"),
        integer("predict.top_k", 1),
        integer("predict.batch_size", 1),
        integer("predict.max_pixels", 1),
    ),
    one_of("explain", ("gradcam", "saliency"), "gradcam or saliency, or null"),
    needs("explain", "explain", ("captum",)),
    Check("explain_layer", lambda v: isinstance(v, str) and v != "", "a layer name such as features.4, or null"),
)
main = hydra_entry("predict", predict, checks=CHECKS)

if __name__ == "__main__":
    main()
