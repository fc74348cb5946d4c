"""Batch transforms that run on the training device: normalisation and per-image augmentation.

Images stay uint8 until a whole batch (or chunk of batches) is turned into floats here,
in a handful of tensor ops. Augmentation draws its random numbers from a table made once
per epoch from (seed, epoch) and indexed by sample, so an image gets the same transform
whatever batch or chunk it lands in, different images get different transforms, and a
run resumed at epoch e draws exactly what the uninterrupted run drew.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from visionlab.seeding import derive_seed

NORMALIZATIONS = ("scale", "standardize")


@dataclass(frozen=True)
class Augment:
    """The ImageDataGenerator options of the notes, applied per image.

    rotation: max degrees either way; width_shift / height_shift: max fraction of the side;
    zoom: Keras' zoom_range (scale drawn in [1 - zoom, 1 + zoom]); horizontal_flip: flip
    half of the images; brightness / contrast: max relative change either way;
    crop_padding: pad each side by this many pixels and crop back at a random place, i.e.
    a random whole-pixel shift with zero fill (the usual CIFAR-10 crop).
    """

    rotation: float = 0.0
    width_shift: float = 0.0
    height_shift: float = 0.0
    zoom: float = 0.0
    horizontal_flip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    crop_padding: int = 0

    NUM_PARAMS = 9  # table columns: rotation, shifts, zoom, flip, contrast, brightness, crop rows/cols

    def __post_init__(self) -> None:
        for name in ("rotation", "width_shift", "height_shift", "zoom", "brightness", "contrast"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"data.augment.{name}={value} must be >= 0")
        if not isinstance(self.crop_padding, int) or self.crop_padding < 0:
            raise ValueError(f"data.augment.crop_padding={self.crop_padding!r} must be an integer >= 0")
        if self.zoom >= 1:
            raise ValueError(f"data.augment.zoom={self.zoom} must be in [0, 1)")

    @property
    def geometric(self) -> bool:
        return bool(self.rotation or self.width_shift or self.height_shift or self.zoom)

    @property
    def enabled(self) -> bool:
        return (self.geometric or self.horizontal_flip or bool(self.brightness or self.contrast)
                or self.crop_padding > 0)

    def __call__(self, x: Tensor, u: Tensor) -> Tensor:
        """Augment float images `x` (N, C, H, W) with uniform(0, 1) draws `u` (N, NUM_PARAMS)."""
        sym = u * 2 - 1  # uniform(-1, 1)
        flip = u[:, 4] < 0.5 if self.horizontal_flip else None
        if self.crop_padding:
            x = self._crop(x, u[:, 7:9])
        if self.geometric:
            x = self._affine(x, sym, flip)
        elif flip is not None:
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self.contrast:
            factor = 1 + self.contrast * sym[:, 5, None, None, None]
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * factor + mean
        if self.brightness:
            x = x * (1 + self.brightness * sym[:, 6, None, None, None])
        return x

    def _crop(self, x: Tensor, u: Tensor) -> Tensor:
        """Each image padded by p zeros, then cropped back to its size at offsets drawn from `u`."""
        p = self.crop_padding
        n, _, h, w = x.shape
        offsets = (u * (2 * p + 1)).long().clamp_max(2 * p)  # uniform over 0..2p
        rows = offsets[:, 0, None] + torch.arange(h, device=x.device)  # (N, H)
        cols = offsets[:, 1, None] + torch.arange(w, device=x.device)  # (N, W)
        padded = F.pad(x, (p, p, p, p))
        batch = torch.arange(n, device=x.device)[:, None, None]
        return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)

    def _affine(self, x: Tensor, sym: Tensor, flip: Tensor | None) -> Tensor:
        angle = sym[:, 0] * math.radians(self.rotation)
        scale = 1 + sym[:, 3] * self.zoom  # >1 samples a larger area: zoom out
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        sx = cos if flip is None else torch.where(flip, -cos, cos)
        sy = sin if flip is None else torch.where(flip, -sin, sin)
        theta = torch.stack(
            [
                torch.stack([sx, -sin, sym[:, 1] * 2 * self.width_shift], 1),
                torch.stack([sy, cos, sym[:, 2] * 2 * self.height_shift], 1),
            ],
            1,
        )
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class BatchTransform:
    """uint8 (N, C, H, W) -> normalised float32, with per-image augmentation when training."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], augment: Augment | None = None,
                 seed: int = 0, num_samples: int = 0) -> None:
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.mean, self.std = tuple(mean), tuple(std)
        # x / 255 then (x - mean) / std, folded into one multiply-add
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -mean_t / std_t
        self.augment = augment if augment is not None and augment.enabled else None
        self.seed = seed
        self.num_samples = num_samples
        self._table: tuple[int, Tensor] | None = None

    def __call__(self, images: Tensor, index: Tensor | None = None, epoch: int | None = None) -> Tensor:
        """Normalise `images`; augment too when `index` (sample ids) and `epoch` are given."""
        x = images.float()
        if self.augment is not None and index is not None and epoch is not None:
            x = self.augment(x / 255.0, self.draws(epoch, x.device)[index]) * 255.0
        scale, shift = self._scale.to(x.device), self._shift.to(x.device)
        return torch.addcmul(shift, x, scale)

    def draws(self, epoch: int, device: torch.device) -> Tensor:
        """The (num_samples, NUM_PARAMS) uniform table for `epoch`, made once per epoch."""
        if self._table is None or self._table[0] != epoch or self._table[1].device != device:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, epoch, salt=1))
            table = torch.rand(self.num_samples, Augment.NUM_PARAMS, generator=gen)
            self._table = (epoch, table.to(device))
        return self._table[1]

