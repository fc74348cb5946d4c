"""Batch transforms that run on the training device: normalisation and per-image augmentation.

Images stay uint8 until a whole batch is turned into floats here,
in a handful of tensor ops. Augmentation draws its random numbers from tables made once
per epoch from (seed, epoch) and indexed by sample, so an image gets the same transform
whatever batch it lands in, different images get different transforms, and a
run resumed at epoch e draws exactly what the uninterrupted run drew.

RandAugment and TrivialAugmentWide are torchvision's (transforms.v2): their augmentation
space and their operations, with each image's operations and magnitudes drawn from its
table row as torchvision draws them; images that drew the same operation go through it
together (the memory loader transforms several batches at once), so a few dozen batched
calls serve a thousand images (costs in BENCHMARKS.md). MixUp and CutMix mix each image
with the next one of its batch, with its own Beta(alpha, alpha) draw, and turn the labels
into soft (N, classes) rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2

from visionlab.utils.checks import Check, between, fraction, integer, is_int, non_negative, run_checks
from visionlab.utils.errors import ConfigError
from visionlab.utils.seeding import derive_seed
from visionlab.utils.torchvision_seams import apply_operation, augmentation_space

NORMALIZATIONS = ("scale", "standardize")


@dataclass(frozen=True)
class Augment:
    """The ImageDataGenerator options of the notes, applied per image.

    rotation: max degrees either way; width_shift / height_shift: max fraction of the side;
    zoom: Keras' zoom_range (scale drawn in [1 - zoom, 1 + zoom]); horizontal_flip: flip
    half of the images; brightness / contrast: max relative change either way;
    crop_padding: pad each side by this many pixels and crop back at a random place, i.e.
    a random whole-pixel shift with zero fill (the usual CIFAR-10 crop).

    Beyond the notes: randaugment (with randaugment_ops operations of randaugment_magnitude
    each) or trivialaugment, per image on the uint8 image first; mixup / cutmix: the Beta
    alpha of each (0: off; both on: each image takes one of the two at random).
    """

    # Ranges within which each option does what it says: a shift of a whole side or more
    # moves the image out of the frame, a contrast or brightness change above 1 flips pixel signs.
    CHECKS: ClassVar[tuple[Check, ...]] = (
        between("rotation", 0, 180, "degrees in [0, 180]"),
        fraction("width_shift"),
        fraction("height_shift"),
        fraction("zoom"),
        between("brightness", 0, 1),
        between("contrast", 0, 1),
        integer("crop_padding", 0),
        non_negative("mixup", "a finite Beta alpha >= 0 (0: off)"),
        non_negative("cutmix", "a finite Beta alpha >= 0 (0: off)"),
        integer("randaugment_ops", 1),
        Check("randaugment_magnitude", lambda v: is_int(v) and 0 <= v <= 30, "an integer in 0..30"),
    )

    rotation: float = 0.0
    width_shift: float = 0.0
    height_shift: float = 0.0
    zoom: float = 0.0
    horizontal_flip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    crop_padding: int = 0
    randaugment: bool = False
    randaugment_ops: int = 2
    randaugment_magnitude: int = 9
    trivialaugment: bool = False
    mixup: float = 0.0
    cutmix: float = 0.0

    NUM_PARAMS = 9  # table columns: rotation, shifts, zoom, flip, contrast, brightness, crop rows/cols

    def __post_init__(self) -> None:
        # the same checks as the config's, for an Augment built in Python
        run_checks(self.CHECKS, lambda key: getattr(self, key.removeprefix("data.augment.")), "data.augment.")
        if self.randaugment and self.trivialaugment:
            raise ConfigError("data.augment.randaugment and data.augment.trivialaugment are both on; choose one")

    @property
    def geometric(self) -> bool:
        return bool(self.rotation or self.width_shift or self.height_shift or self.zoom)

    @property
    def pixelwise(self) -> bool:
        """Whether the notes' ImageDataGenerator-style options are on (see __call__)."""
        return self.geometric or self.horizontal_flip or bool(self.brightness or self.contrast) or self.crop_padding > 0

    @property
    def mixes(self) -> bool:
        return bool(self.mixup or self.cutmix)

    @property
    def enabled(self) -> bool:
        return self.pixelwise or self.randaugment or self.trivialaugment or self.mixes

    def policy(self) -> v2.RandAugment | v2.TrivialAugmentWide | None:
        """torchvision's RandAugment or TrivialAugmentWide (BatchTransform draws per image)."""
        if self.randaugment:
            return v2.RandAugment(num_ops=self.randaugment_ops, magnitude=self.randaugment_magnitude)
        return v2.TrivialAugmentWide() if self.trivialaugment else None

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


MIX_PARAMS = 5  # mix table columns: mixup and cutmix lambdas, choice, cut centre row/col


def mix(
    x: Tensor, labels: Tensor, partner: Tensor, u: Tensor, augment: Augment, num_classes: int
) -> tuple[Tensor, Tensor]:
    """MixUp / CutMix of `x` with `x[partner]`, per image, from the mix table rows `u`; the
    labels become the same mixture of one-hot rows (rows sum to 1)."""
    n, _, h, w = x.shape
    use_cut = torch.full((n,), augment.cutmix > 0, device=x.device)
    if augment.mixup and augment.cutmix:
        use_cut = u[:, 2] < 0.5
    lam = torch.where(use_cut, u[:, 1], u[:, 0])
    # CutMix: a box of area (1 - lam) around a uniform centre, clipped; lam is then the kept area
    cut_h, cut_w = (h * (1 - lam).sqrt()).round(), (w * (1 - lam).sqrt()).round()
    cy, cx = (u[:, 3] * h).floor(), (u[:, 4] * w).floor()
    y0, y1 = (cy - cut_h // 2).clamp(0, h), (cy + cut_h - cut_h // 2).clamp(0, h)
    x0, x1 = (cx - cut_w // 2).clamp(0, w), (cx + cut_w - cut_w // 2).clamp(0, w)
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    box = ((rows >= y0[:, None]) & (rows < y1[:, None]))[:, :, None] & ((cols >= x0[:, None]) & (cols < x1[:, None]))[
        :, None, :
    ]
    lam = torch.where(use_cut, 1 - box.flatten(1).float().mean(1), lam)
    other = x[partner]
    blended = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * other
    out = torch.where(use_cut[:, None, None, None], torch.where(box[:, None], other, x), blended)
    # scatter, not F.one_hot, which reads labels.min() back to the host to check it on a CPU
    one_hot = x.new_zeros(n, num_classes).scatter_(1, labels[:, None], 1.0)
    soft = lam[:, None] * one_hot + (1 - lam[:, None]) * one_hot[partner]
    return out, soft


class BatchTransform:
    """uint8 (N, C, H, W) -> normalised float32, with per-image augmentation when training."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        augment: Augment | None = None,
        seed: int = 0,
        num_samples: int = 0,
        num_classes: int = 0,
    ) -> None:
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.mean, self.std = tuple(mean), tuple(std)
        # x / 255 then (x - mean) / std, folded into one multiply-add
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -mean_t / std_t
        self.augment = augment if augment is not None and augment.enabled else None
        if self.augment is not None and self.augment.mixes and num_classes < 1:
            raise ValueError("mixup / cutmix need the number of classes (num_classes)")
        self.policy = self.augment.policy() if self.augment is not None else None
        self.seed = seed
        self.num_samples, self.num_classes = num_samples, num_classes
        self._table: tuple[int, Tensor] | None = None
        self._mix_table: tuple[int, Tensor] | None = None
        self._policy_table: tuple[int, Tensor] | None = None

    def __call__(self, images: Tensor, index: Tensor | None = None, epoch: int | None = None) -> Tensor:
        """Normalise `images`; augment each image too when `index` (sample ids) and `epoch`
        are given (mixing needs the labels and the batch: see `mix_batch`)."""
        if self.augment is not None and index is not None and epoch is not None:
            x = self._augmented(images, self.augment, index, epoch)
        else:
            x = images.float()
        if self._scale.device != x.device:  # once per device: a copy from the host per batch would wait for it
            self._scale, self._shift = self._scale.to(x.device), self._shift.to(x.device)
        return torch.addcmul(self._shift, x, self._scale)

    def mix_batch(self, x: Tensor, labels: Tensor, index: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        """With mixup / cutmix: each image of the batch `x` (already through `__call__`) mixed
        with the next one (the last with the first), the labels then soft (N, classes) rows;
        otherwise `x` and `labels` as they are."""
        if self.augment is None or not self.augment.mixes:
            return x, labels
        partner = torch.arange(1, len(x) + 1, device=x.device) % len(x)
        return mix(x, labels, partner, self.mix_draws(epoch, x.device)[index], self.augment, self.num_classes)

    def train_batch(self, images: Tensor, labels: Tensor, index: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        """A uint8 training batch augmented, normalised and mixed (`__call__`, then `mix_batch`)."""
        return self.mix_batch(self(images, index, epoch), labels, index, epoch)

    def _augmented(self, images: Tensor, augment: Augment, index: Tensor, epoch: int) -> Tensor:
        """The policy (uint8) and then the pixelwise augmentation of each image, as floats in 0..255."""
        if self.policy is not None:
            images = self.apply_policy(images, index, epoch)
        x = images.float()
        if augment.pixelwise:
            x = augment(x / 255.0, self.draws(epoch, x.device)[index]) * 255.0
        return x

    def apply_policy(self, images: Tensor, index: Tensor, epoch: int) -> Tensor:
        """RandAugment / TrivialAugmentWide per image (uint8 in, uint8 out), from the
        (seed, epoch) policy table: each image's result depends on its index only. The policy's
        operations and their application are private in torchvision:
        visionlab.utils.torchvision_seams."""
        policy = self.policy
        assert policy is not None, "apply_policy needs data.augment.randaugment or trivialaugment"
        space = augmentation_space(policy)
        names = list(space)
        bins = policy.num_magnitude_bins
        u = self.policy_draws(epoch)[index.cpu()]
        h, w = images.shape[-2:]
        for k in range(u.shape[1] // 3):  # one slot per operation (RandAugment: num_ops of them)
            op = (u[:, 3 * k] * len(names)).long().clamp_max(len(names) - 1)
            level = (
                torch.full_like(op, policy.magnitude)
                if isinstance(policy, v2.RandAugment)
                else (u[:, 3 * k + 1] * bins).long().clamp_max(bins - 1)
            )
            negative = u[:, 3 * k + 2] <= 0.5
            key = (op * bins + level) * 2 + negative.long()
            out = images.clone()
            for value in key.unique().tolist():
                rows = (key == value).nonzero().flatten().to(images.device)
                name = names[value // 2 // bins]
                magnitudes_fn, signed = space[name]
                magnitudes = magnitudes_fn(bins, h, w)
                magnitude = 0.0 if magnitudes is None else float(magnitudes[(value // 2) % bins])
                if signed and value % 2:
                    magnitude = -magnitude
                out[rows] = apply_operation(policy, images[rows], name, magnitude)
            images = out
        return images

    def policy_draws(self, epoch: int) -> Tensor:
        """The (num_samples, 3 x operations) uniform table of `epoch` for RandAugment /
        TrivialAugmentWide: per operation, which one, its magnitude bin and its sign."""
        if self._policy_table is None or self._policy_table[0] != epoch:
            ops = self.policy.num_ops if isinstance(self.policy, v2.RandAugment) else 1
            gen = torch.Generator().manual_seed(derive_seed(self.seed, epoch, salt=4))
            self._policy_table = (epoch, torch.rand(self.num_samples, 3 * ops, generator=gen))
        return self._policy_table[1]

    def draws(self, epoch: int, device: torch.device) -> Tensor:
        """The (num_samples, NUM_PARAMS) uniform table for `epoch`, made once per epoch."""
        if self._table is None or self._table[0] != epoch or self._table[1].device != device:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, epoch, salt=1))
            table = torch.rand(self.num_samples, Augment.NUM_PARAMS, generator=gen)
            self._table = (epoch, table.to(device))
        return self._table[1]

    def mix_draws(self, epoch: int, device: torch.device) -> Tensor:
        """The (num_samples, MIX_PARAMS) table for `epoch`: Beta(alpha, alpha) lambdas of
        mixup and cutmix, uniforms for the choice and the box centre."""
        if self._mix_table is None or self._mix_table[0] != epoch or self._mix_table[1].device != device:
            augment, n = self.augment, self.num_samples
            assert augment is not None, "mixing draws need data.augment.mixup or cutmix"
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(self.seed, epoch, salt=3))
                lams = [
                    torch.distributions.Beta(a, a).sample((n,)) if a > 0 else torch.ones(n)
                    for a in (float(augment.mixup), float(augment.cutmix))
                ]
                uniforms = torch.rand(n, 3)
            table = torch.cat([torch.stack(lams, 1), uniforms], 1)
            self._mix_table = (epoch, table.to(device))
        return self._mix_table[1]
