"""RandAugment, TrivialAugmentWide, MixUp and CutMix: per image, reproducible by seed, the
same through both loaders, soft labels that sum to 1, and refused where they cannot work."""

from __future__ import annotations

import pytest
import torch

from visionlab.app.config import ConfigError, validate
from visionlab.data import Augment, BatchTransform, MemoryLoader, SyntheticDataModule

N, CLASSES = 12, 3


def batch(channels: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """N copies of one uint8 image (so any difference comes from the augmentation), labels, indices."""
    gen = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (channels, 16, 16), generator=gen, dtype=torch.uint8)
    return image.expand(N, -1, -1, -1).clone(), torch.arange(N) % CLASSES, torch.arange(N)


def transform(seed: int = 5, classes: int = CLASSES, **augment) -> BatchTransform:
    return BatchTransform((0.5,), (0.25,), Augment(**augment), seed=seed, num_samples=N, num_classes=classes)


@pytest.mark.parametrize(
    "augment",
    [
        {"randaugment": True},
        {"trivialaugment": True},
        {"randaugment": True, "randaugment_ops": 3, "randaugment_magnitude": 20},
    ],
)
def test_policies_draw_per_image_and_repeat_with_the_seed(augment):
    images, labels, index = batch()
    x, y = transform(**augment).train_batch(images, labels, index, epoch=0)
    assert torch.equal(y, labels)  # no mixing: hard labels stay
    assert len({tuple(row.flatten().tolist()) for row in x}) >= N // 2  # identical inputs, mostly different outputs
    again, _ = transform(**augment).train_batch(images, labels, index, epoch=0)
    assert torch.equal(x, again)
    other_seed, _ = transform(seed=6, **augment).train_batch(images, labels, index, epoch=0)
    next_epoch, _ = transform(**augment).train_batch(images, labels, index, epoch=1)
    assert not torch.equal(x, other_seed) and not torch.equal(x, next_epoch)
    # an image's draw depends on its index, not its place in the batch
    alone = transform(**augment)(images[[7]], index[[7]], 0)
    assert torch.equal(alone[0], x[7])


@pytest.mark.parametrize("augment", [{"mixup": 0.4}, {"cutmix": 1.0}, {"mixup": 0.4, "cutmix": 1.0}])
def test_mixing_gives_soft_labels_summing_to_one_with_per_image_weights(augment):
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (N, 3, 16, 16), generator=gen, dtype=torch.uint8)
    labels, index = torch.arange(N), torch.arange(N)  # a class per image: partners never share one
    t = transform(classes=N, **augment)
    x, soft = t.train_batch(images, labels, index, epoch=0)
    assert soft.shape == (N, N) and soft.dtype == torch.float32
    assert torch.allclose(soft.sum(1), torch.ones(N)) and bool((soft >= 0).all())
    kept = soft[torch.arange(N), labels]  # the weight of each image's own class
    assert len(set(kept.tolist())) > N // 2  # drawn per image, not once per batch
    plain = t(images)  # normalised only
    partner = torch.arange(1, N + 1) % N  # the next image of the batch
    lam = kept[:, None, None, None]
    blended = ((x - (lam * plain + (1 - lam) * plain[partner])).abs() < 1e-4).flatten(1).all(1)
    pasted = ((x - plain).abs().lt(1e-4) | (x - plain[partner]).abs().lt(1e-4)).flatten(1).all(1)
    assert bool((blended | pasted).all())  # each image: a blend of the pair, or pixels of one or the other
    if "cutmix" not in augment:
        assert bool(blended.all())
    elif "mixup" in augment:
        assert bool((blended & ~pasted).any()) and bool((pasted & ~blended).any())  # each image draws which
    again, soft_again = transform(classes=N, **augment).train_batch(images, labels, index, epoch=0)
    assert torch.equal(x, again) and torch.equal(soft, soft_again)


def test_cutmix_labels_are_the_pasted_area():
    images, labels, index = batch(3)
    images[1::2] = 0  # partners of even images are black: the pasted box is where pixels became 0
    t = transform(cutmix=1.0)
    x, soft = t.train_batch(images, labels, index, epoch=0)
    plain = t(images)
    pasted = (x[0::2] != plain[0::2]).any(1).flatten(1).float().mean(1)
    evens = torch.arange(0, N, 2)
    assert bool((pasted > 0).any())
    assert torch.allclose(soft[evens, labels[evens + 1]], pasted, atol=1e-6)  # the partner's share = its area
    assert torch.allclose(soft[evens, labels[evens]], 1 - pasted, atol=1e-6)


@pytest.mark.parametrize("augment", [{"randaugment": True}, {"trivialaugment": True, "horizontal_flip": True}])
def test_an_image_gets_the_same_tensor_through_both_loaders(augment):
    def module(loader: str) -> SyntheticDataModule:
        dm = SyntheticDataModule(
            train_size=40, val_size=8, test_size=8, batch_size=8, loader=loader, augment=augment, seed=3
        )
        dm.setup()
        return dm

    memory, dataloader = module("memory"), module("dataloader")
    by_index: dict[int, torch.Tensor] = {}
    loader = memory.train_dataloader()
    assert isinstance(loader, MemoryLoader)
    for idx, (x, _) in zip(loader.order(loader.env()).split(8), loader):
        by_index.update({i: row for i, row in zip(idx.tolist(), x)})
    assert len(by_index) == len(memory.splits["train"][1])
    batches = dataloader.train_dataloader()
    for images, labels, index in batches:
        x, _ = dataloader._train_transform.train_batch(images, labels, index, 0)
        for row, i in zip(x, index.tolist()):
            assert torch.equal(row, by_index[i]), i


def test_hinge_with_mixup_and_bad_values_are_refused_in_one_line(cfg_factory):
    with pytest.raises(
        ConfigError,
        match=r"^task.loss=hinge cannot learn from the soft labels of "
        r"data.augment.mixup; use task.loss=cross_entropy or switch mixing off$",
    ):
        validate(cfg_factory("task.loss=hinge", "data.augment.mixup=0.2"))
    with pytest.raises(ConfigError, match=r"^data.augment.cutmix=-1 is not allowed; expected a finite Beta alpha >= 0"):
        validate(cfg_factory("data.augment.cutmix=-1"))
    with pytest.raises(ValueError, match="randaugment and data.augment.trivialaugment are both on; choose one"):
        Augment(randaugment=True, trivialaugment=True)


@pytest.mark.parametrize("loader", ["memory", "dataloader"])
def test_training_runs_on_soft_labels(cfg_factory, loader):
    from visionlab.app.fit import train

    metrics = train(
        cfg_factory(
            "data.augment.mixup=0.2",
            "data.augment.cutmix=1.0",
            "data.augment.trivialaugment=true",
            f"data.loader={loader}",
            "model=mlp",
            "model.hidden=[16]",
        )
    )
    assert 0 <= metrics["train/acc"] <= 1 and metrics["train/loss"] > 0
