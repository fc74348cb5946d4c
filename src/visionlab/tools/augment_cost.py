"""What each augmentation costs per training epoch: the training batch transform alone
(uint8 batch -> augmented, normalised floats, soft labels when mixing), timed on a sample
of synthetic 28x28 images through the memory loader and batch by batch, and scaled to an
epoch of `--epoch-images` images.

    python scripts/augment_cost.py                    # 5,000 images, Fashion-MNIST's 55,000 epoch
    python scripts/augment_cost.py --images 1000 --settings none randaugment
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch

from visionlab.data import Augment, BatchTransform, MemoryLoader
from visionlab.data.loaders import LoaderEnv

NOTES = {"rotation": 20, "width_shift": 0.2, "height_shift": 0.2, "zoom": 0.2, "horizontal_flip": True}
SETTINGS: dict[str, dict[str, Any]] = {
    "none": {},
    "notes": NOTES,
    "randaugment": {"randaugment": True},
    "trivialaugment": {"trivialaugment": True},
    "mixup": {"mixup": 0.2},
    "cutmix": {"cutmix": 1.0},
}


def seconds_per_image(setting: dict[str, Any], images: int, batch_size: int, memory: bool, repeats: int = 3) -> float:
    """Best of `repeats` passes over `images` images, in seconds per image: through the
    memory loader (`memory`, RandAugment / TrivialAugment run on several batches at once)
    or batch by batch, as on the DataLoader path."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (images, 1, 28, 28), generator=gen, dtype=torch.uint8)
    y = torch.randint(0, 10, (images,), generator=gen)
    transform = BatchTransform((0.286,), (0.353,), Augment(**setting), seed=0, num_samples=images, num_classes=10)
    best = float("inf")
    for epoch in range(repeats):
        start = time.perf_counter()
        if memory:
            for _ in MemoryLoader(x, y, batch_size, transform, shuffle=True, env=partial(LoaderEnv, epoch=epoch)):
                pass
        else:
            for batch in torch.randperm(images, generator=gen).split(batch_size):
                transform.train_batch(x[batch], y[batch], batch, epoch)
        best = min(best, time.perf_counter() - start)
    return best / images


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="images timed per setting")
    parser.add_argument("--epoch-images", type=int, default=55000, help="training images per epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args(argv)
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(
        f"| setting | ms per 1000 images, memory loader | s per epoch of {args.epoch_images}, memory loader "
        f"| s per epoch, batch by batch (dataloader path) |"
    )
    print("|---|---|---|---|")
    for name in args.settings:
        memory = seconds_per_image(SETTINGS[name], args.images, args.batch_size, memory=True)
        per_batch = seconds_per_image(SETTINGS[name], args.images, args.batch_size, memory=False)
        epoch = args.epoch_images
        print(f"| {name} | {memory * 1e6:.1f} | {memory * epoch:.2f} | {per_batch * epoch:.2f} |")
