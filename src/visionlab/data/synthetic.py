"""Synthetic images with a learnable class signal, for tests, smoke runs and benchmarks
on machines without the real data."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from visionlab.data.datamodule import InMemoryImageDataModule, Split


class SyntheticDataModule(InMemoryImageDataModule):
    """Each class is a fixed random prototype image; samples are noisy copies of it."""

    def __init__(
        self,
        *args,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        train_size: int = 512,
        test_size: int = 128,
        noise: float = 0.5,
        **kwargs,
    ) -> None:
        self.input_shape = tuple(input_shape)
        self.classes = tuple(f"class_{i}" for i in range(num_classes))
        self.train_size, self.test_size, self.noise = train_size, test_size, noise
        super().__init__(*args, **kwargs)

    def prepare_data(self) -> None:
        """Nothing to fetch: the images are generated."""

    def read_split(self, name: str) -> Split:
        gen = torch.Generator().manual_seed(1234)
        prototypes = torch.rand(self.num_classes, *self.input_shape, generator=gen)
        gen.manual_seed(1 if name == "train" else 2)
        n = self.train_size if name == "train" else self.test_size
        labels = torch.arange(n) % self.num_classes
        labels = labels[torch.randperm(n, generator=gen)]
        noise = torch.randn(n, *self.input_shape, generator=gen) * self.noise
        images = ((prototypes[labels] + noise).clamp(0, 1) * 255).round().to(torch.uint8)
        return images, labels
