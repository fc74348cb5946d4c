"""Splits, normalisation, the in-memory loader, per-image augmentation, and the agreement of
the memory and DataLoader paths."""

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FMNIST_SYSTEM, needs_real_fashion_mnist
from visionlab.data import Augment, BatchTransform, FashionMNISTDataModule, MemoryLoader, SyntheticDataModule
from visionlab.data.datamodule import resolve_val_size
from visionlab.data.formats.idx import write_idx
from visionlab.data.loaders import LoaderEnv
from visionlab.data.sources import COPIES_RECORD


def fake_fashion_mnist(folder: Path, n_train: int = 100, n_test: int = 20) -> Path:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    return folder


def test_fashion_mnist_module_reads_idx_files_and_splits_by_seed(tmp_path):
    fake_fashion_mnist(tmp_path)
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), val_size=0.25, verify=False)
    dm.prepare_data()
    dm.setup()
    (xt, yt), (xv, yv), (_, ys) = dm.splits["train"], dm.splits["val"], dm.splits["test"]
    assert (len(yt), len(yv), len(ys)) == (75, 25, 20)  # a fraction applies to the images actually read
    assert xt.shape[1:] == (1, 28, 28) and xt.dtype == torch.uint8 and yt.dtype == torch.int64
    again = FashionMNISTDataModule(data_dir=str(tmp_path), val_size=0.25, verify=False)
    again.setup()
    assert torch.equal(again.splits["val"][0], xv)
    other = FashionMNISTDataModule(data_dir=str(tmp_path), val_size=0.25, split_seed=7, verify=False)
    other.setup()
    assert not torch.equal(other.splits["val"][1], yv)


@pytest.mark.parametrize("val_size,expected", [(5000, 5000), (0.1, 6000), (0, 0)])
def test_val_size_count_or_fraction(val_size, expected):
    assert resolve_val_size(val_size, 60_000) == expected


def test_val_size_too_large_is_refused_before_reading():
    with pytest.raises(ValueError, match="data.val_size=70000 must be smaller than the 60000 training images"):
        FashionMNISTDataModule(data_dir="/nonexistent", val_size=70000)


def test_split_sizes_on_synthetic_data_and_normalisation_stats():
    dm = SyntheticDataModule(train_size=200, val_size=50)
    dm.setup()
    assert [len(dm.splits[s][1]) for s in ("train", "val", "test")] == [150, 50, 128]
    x = dm.transform()(dm.splits["train"][0])
    assert x.mean().item() == pytest.approx(0, abs=1e-4) and x.std().item() == pytest.approx(1, abs=1e-3)
    scaled = SyntheticDataModule(train_size=200, val_size=50, normalization="scale")
    scaled.setup()
    assert torch.allclose(scaled.transform()(scaled.splits["train"][0][:4]), scaled.splits["train"][0][:4] / 255.0)


def memory_loader(n=103, batch=10, epoch=0, rank=0, world=1, seed=0, augment=None):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    transform = BatchTransform((0.0,), (1 / 255,), augment, seed, n)  # identity: float of the uint8 value
    return MemoryLoader(
        images,
        torch.arange(n),
        batch,
        transform,
        shuffle=True,
        seed=seed,
        env=lambda: LoaderEnv(epoch=epoch, rank=rank, world_size=world),
    )


def labels_of(loader):
    return torch.cat([y for _, y in loader])


def test_every_index_once_per_epoch_and_a_new_order_each_epoch():
    first, second = labels_of(memory_loader(epoch=0)), labels_of(memory_loader(epoch=1))
    assert sorted(first.tolist()) == list(range(103)) == sorted(second.tolist())
    assert not torch.equal(first, second)
    assert torch.equal(first, labels_of(memory_loader(epoch=0)))


def test_single_batches_with_the_last_one_short_and_a_mid_epoch_resume_skips_what_was_done():
    loader = memory_loader()
    batches = list(loader)
    assert len(loader) == len(batches) == 11 and [len(y) for _, y in batches] == [10] * 10 + [3]
    assert all(torch.equal(x.flatten(1)[:, 0], y.float()) for x, y in batches)
    loader.load_state_dict({"epoch": 0, "steps_done": 4})
    resumed = list(loader)
    assert len(resumed) == 7 and all(torch.equal(a[1], b[1]) for a, b in zip(resumed, batches[4:]))
    assert len(list(loader)) == 11, "the skip applies to the resumed pass only"


def test_ddp_ranks_get_disjoint_equal_shards_covering_everything():
    shards = [labels_of(memory_loader(rank=r, world=2)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 52
    assert set(shards[0].tolist()) | set(shards[1].tolist()) == set(range(103))
    assert len(set(shards[0].tolist()) & set(shards[1].tolist())) <= 1  # one padded sample


def test_per_image_augmentation_differs_within_a_batch_and_is_reproducible():
    aug = Augment(rotation=30, width_shift=0.2, height_shift=0.2, zoom=0.2, horizontal_flip=True)
    images = torch.zeros(8, 1, 28, 28, dtype=torch.uint8)
    images[:, :, 8:20, 10:14] = 255  # the same bar in every image
    make = lambda seed: BatchTransform((0.0,), (1.0,), aug, seed, 8)  # noqa: E731
    out = make(0)(images, torch.arange(8), epoch=0)
    assert all(not torch.allclose(out[0], out[i]) for i in range(1, 8))
    assert torch.equal(out, make(0)(images, torch.arange(8), epoch=0))
    assert not torch.allclose(out, make(1)(images, torch.arange(8), epoch=0))
    assert not torch.allclose(out, make(0)(images, torch.arange(8), epoch=1))
    # an image gets the same draws whichever batch it is in
    assert torch.equal(make(0)(images[5:6], torch.tensor([5]), epoch=0), out[5:6])


def test_flip_only_augmentation_flips_about_half():
    images = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(64, 1, 1, 1)
    out = BatchTransform((0.0,), (1 / 255,), Augment(horizontal_flip=True), 0, 64)(images, torch.arange(64), 0)
    flipped = sum(torch.equal(o, images[0].flip(-1).float()) for o in out)
    unchanged = sum(torch.equal(o, images[0].float()) for o in out)
    assert flipped + unchanged == 64 and 16 < flipped < 48


@pytest.mark.parametrize("augment", [{}, {"rotation": 15, "horizontal_flip": True}])
def test_memory_and_dataloader_paths_give_the_same_tensors_for_the_same_image(augment):
    by_index = {}
    for loader in ("memory", "dataloader"):
        dm = SyntheticDataModule(train_size=64, val_size=16, batch_size=20, augment=augment, loader=loader)
        dm.setup()
        train = dm.train_dataloader()
        if loader == "memory":
            index = train.order(LoaderEnv())
            x = torch.cat([x for x, _ in train])
            val = next(iter(dm.val_dataloader()))[0]
        else:  # as Lightning does: the batch transform runs after the transfer to the device
            batches = list(train)
            index = torch.cat([i for _, _, i in batches])
            x = torch.cat([dm._train_transform(images, i, 0) for images, _, i in batches])
            images, labels, _ = next(iter(dm.val_dataloader()))
            val = dm.on_after_batch_transfer((images, labels, None), 0)[0]
        assert x.dtype == torch.float32 and x.shape == (48, 1, 28, 28)
        by_index[loader] = (x[torch.argsort(index)], val)
    assert torch.allclose(by_index["memory"][0], by_index["dataloader"][0], atol=1e-6)
    assert torch.equal(by_index["memory"][1], by_index["dataloader"][1])


@needs_real_fashion_mnist()
def test_real_fashion_mnist_sizes_stats_and_first_test_labels(tmp_path):
    dm = FashionMNISTDataModule(data_dir=str(tmp_path / "fm"), val_size=0)
    dm.prepare_data()
    dm.setup()
    assert len(dm.splits["train"][1]) == 60_000 and len(dm.splits["test"][1]) == 10_000
    assert dm.splits["test"][1][:5].tolist() == [9, 2, 1, 1, 6]
    assert [dm.classes[i] for i in (9, 2, 1, 1, 6)] == ["Ankle boot", "Pullover", "Trouser", "Trouser", "Shirt"]
    assert dm.mean[0] == pytest.approx(0.2860, abs=1e-4) and dm.std[0] == pytest.approx(0.3530, abs=1e-4)
    assert sorted(p.name for p in (tmp_path / "fm").iterdir() if p.name != COPIES_RECORD) == sorted(
        p.name for p in FMNIST_SYSTEM.glob("*.gz")
    )
