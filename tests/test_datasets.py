"""MNIST, CIFAR-10 and image folders through their real file formats and parsers; the
crop-with-padding augmentation. No network: downloads are replaced by local copies."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visionlab.app.config import compose_config
from visionlab.app.fit import train
from visionlab.data import CIFAR10DataModule, ImageFolderDataModule, MNISTDataModule
from visionlab.data.cifar10 import CIFAR10
from visionlab.data.formats.cifar import read_cifar_batch
from visionlab.data.formats.idx import write_idx
from visionlab.data.mnist import MNIST
from visionlab.data.sources import COPIES_RECORD, DataSourceError, ensure_files
from visionlab.data.transforms import Augment, BatchTransform


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def run_train(tmp_path: Path, *overrides: str) -> dict[str, float]:
    """One tiny fit + test through the real config and entry code."""
    cfg = compose_config(
        [
            "logger=csv",
            "~callbacks.model_summary",
            "trainer.max_epochs=1",
            "~callbacks.progress_bar",
            "trainer.enable_progress_bar=false",
            "trainer.num_sanity_val_steps=0",
            *overrides,
        ],
        output_dir=tmp_path / "run",
    )
    return train(cfg)


# --- MNIST -----------------------------------------------------------------------------
def make_mnist(folder: Path, n_train: int = 60, n_test: int = 20) -> None:
    """The four idx .gz files; each image is its label's value times 25 plus noise."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = labels[:, None, None] * 25 + rng.integers(0, 5, (n, 28, 28))
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)


def test_mnist_from_env_dir_then_trains(tmp_path, monkeypatch):
    make_mnist(tmp_path / "source")
    monkeypatch.setenv("VISIONLAB_MNIST_DIR", str(tmp_path / "source"))
    dm = MNISTDataModule(data_dir=str(tmp_path / "mnist"), val_size=10, verify=False)
    dm.prepare_data()
    dm.setup()
    assert sorted(set(os.listdir(tmp_path / "mnist")) - {COPIES_RECORD}) == sorted(s.name for s in MNIST.files)
    assert dm.classes == tuple("0123456789") and dm.num_classes == 10 and dm.input_shape == (1, 28, 28)
    assert [len(dm.splits[s][1]) for s in ("train", "val", "test")] == [50, 10, 20]
    assert dm.splits["test"][0].dtype == torch.uint8 and dm.splits["test"][1][:3].tolist() == [0, 1, 2]
    metrics = run_train(
        tmp_path,
        "data=mnist",
        f"data.data_dir={tmp_path / 'mnist'}",
        "data.verify=false",
        "data.val_size=10",
        "model=mlp",
    )
    assert 0 <= metrics["test/acc"] <= 1


def test_mnist_checksums_are_of_the_gz_files(tmp_path):
    """MNIST's published md5s are of the .gz files as stored: a good copy passes, a bad one is named."""
    make_mnist(tmp_path / "mirror")
    specs = tuple(dataclasses.replace(s, md5=md5(tmp_path / "mirror" / s.name)) for s in MNIST.files)
    ds = dataclasses.replace(MNIST, files=specs, env_var=None, urls=("https://mirror.invalid/mnist",))
    fetched = []

    def download(url: str, dest: Path) -> None:
        fetched.append(url.rsplit("/", 1)[-1])
        shutil.copyfile(tmp_path / "mirror" / fetched[-1], dest)

    ensure_files(ds, tmp_path / "ok", download=download)
    assert sorted(fetched) == sorted(s.name for s in specs)
    bad = dataclasses.replace(ds, files=(dataclasses.replace(specs[0], md5="0" * 32),))
    with pytest.raises(DataSourceError, match="checksum .* != expected 0{32}"):
        ensure_files(bad, tmp_path / "bad", download=download)
    assert not (tmp_path / "bad" / specs[0].name).exists()


# --- CIFAR-10 --------------------------------------------------------------------------
NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_cifar_archive(folder: Path, per_batch: int = 10) -> Path:
    """cifar-10-python.tar.gz as published: Python-2-style pickles with bytes keys.

    Image i of a batch has label i % 10 and planes R, G, B filled with label, 100 + label, 200 + label.
    """
    inner = folder / "build" / "cifar-10-batches-py"
    inner.mkdir(parents=True)
    labels = [i % 10 for i in range(per_batch)]
    planes = np.array([[lab, 100 + lab, 200 + lab] for lab in labels], dtype=np.uint8)
    data = np.repeat(planes, 1024, axis=1)  # (N, 3072): 1024 R values, then G, then B
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"{i}.png".encode() for i in range(per_batch)],
        }
        (inner / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [n.encode() for n in NAMES], b"num_cases_per_batch": per_batch, b"num_vis": 3072}
    (inner / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    archive = folder / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(inner, arcname="cifar-10-batches-py")
    return archive


def test_cifar10_download_is_verified_and_extracted_atomically(tmp_path):
    archive = make_cifar_archive(tmp_path / "site")
    spec = dataclasses.replace(CIFAR10.files[0], md5=md5(archive))
    ds = dataclasses.replace(CIFAR10, files=(spec,))

    def download(url: str, dest: Path) -> None:
        assert url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
        shutil.copyfile(archive, dest)

    data_dir = tmp_path / "cifar10"
    ensure_files(ds, data_dir, download=download)
    assert sorted(os.listdir(data_dir)) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]
    assert len(os.listdir(data_dir / "cifar-10-batches-py")) == 7

    # the official md5 rejects our (different) archive, and nothing is left half-done
    with pytest.raises(DataSourceError, match="checksum .* != expected c58f30108f718f92721af3b95e74349a"):
        ensure_files(CIFAR10, tmp_path / "other", download=download)
    assert not (tmp_path / "other").exists() or os.listdir(tmp_path / "other") == []


def test_cifar10_corrupt_archive_leaves_no_folder(tmp_path):
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar-10-python.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(DataSourceError, match="cannot unpack"):
        ensure_files(CIFAR10, tmp_path / "cifar10", verify=False)
    assert os.listdir(tmp_path / "cifar10") == ["cifar-10-python.tar.gz"]


def test_cifar10_reads_batches_and_meta_then_trains(tmp_path, monkeypatch):
    make_cifar_archive(tmp_path / "site")
    monkeypatch.setenv("VISIONLAB_CIFAR10_DIR", str(tmp_path / "site"))
    dm = CIFAR10DataModule(data_dir=str(tmp_path / "cifar10"), val_size=10, verify=False)
    dm.prepare_data()
    dm.setup()
    assert dm.classes == tuple(NAMES) and dm.input_shape == (3, 32, 32)
    images, labels = dm.splits["test"]
    assert images.shape == (10, 3, 32, 32) and labels.tolist() == list(range(10))
    assert images[3, :, 5, 7].tolist() == [3, 103, 203]  # channel planes land in the right place
    assert len(dm.splits["train"][1]) == 40 and len(dm.mean) == 3
    metrics = run_train(
        tmp_path,
        "data=cifar10",
        f"data.data_dir={tmp_path / 'cifar10'}",
        "data.verify=false",
        "data.val_size=10",
        "model=cnn",
    )
    assert 0 <= metrics["test/acc"] <= 1


def test_cifar10_unpacked_folder_in_env_dir_is_copied(tmp_path, monkeypatch):
    make_cifar_archive(tmp_path / "site")
    monkeypatch.setenv("VISIONLAB_CIFAR10_DIR", str(tmp_path / "site" / "build"))  # folder only, no archive
    ensure_files(CIFAR10, tmp_path / "cifar10")
    assert os.listdir(tmp_path / "cifar10") == ["cifar-10-batches-py"]
    assert len(os.listdir(tmp_path / "cifar10" / "cifar-10-batches-py")) == 7


def test_cifar_reader_refuses_pickled_code(tmp_path):
    (tmp_path / "evil").write_bytes(pickle.dumps({b"data": os.getcwd}, protocol=2))
    with pytest.raises(ValueError, match="refusing to load"):
        read_cifar_batch(tmp_path / "evil")


# --- crop with padding -----------------------------------------------------------------
def test_crop_padding_is_a_whole_pixel_shift_with_zero_fill():
    x = torch.rand(64, 3, 8, 8)
    out = Augment(crop_padding=2)(x, torch.rand(64, Augment.NUM_PARAMS, generator=torch.Generator().manual_seed(0)))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    crops = {(r, c): padded[:, :, r : r + 8, c : c + 8] for r in range(5) for c in range(5)}
    found = [[k for k, crop in crops.items() if torch.equal(out[i], crop[i])] for i in range(64)]
    assert all(len(f) == 1 for f in found)  # every output is exactly one of the 25 padded crops
    assert len({f[0] for f in found}) > 10  # and images get different ones


def test_crop_draws_come_from_the_per_epoch_table():
    t = BatchTransform((0.5,), (0.25,), Augment(crop_padding=4, brightness=0.2), seed=3, num_samples=16)
    images = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8)
    idx = torch.arange(16)
    whole = t(images, idx, epoch=1)
    halves = torch.cat([t(images[:8], idx[:8], epoch=1), t(images[8:], idx[8:], epoch=1)])
    assert torch.equal(whole, halves)  # same image, same draw, whatever the batch
    assert not torch.equal(whole, t(images, idx, epoch=2))


# --- image folders ---------------------------------------------------------------------
COLOURS = {"bird": (200, 30, 30), "cat": (30, 200, 30), "dog": (30, 30, 200)}


def make_folder(root: Path, per_class: int = 20, size: tuple[int, int] = (40, 30)) -> Path:
    """PNG images of one colour per class (plus noise), one JPEG, a corrupt file and a text file."""
    rng = np.random.default_rng(0)
    for cls, rgb in COLOURS.items():
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(rgb) + rng.integers(-20, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i:03d}.png")
    Image.new("RGB", size, COLOURS["cat"]).save(root / "cat" / "extra.jpg", quality=90)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    (root / "bird" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_skips_bad_files_and_splits_by_class(tmp_path, caplog):
    root = make_folder(tmp_path / "pics")
    dm = ImageFolderDataModule(root=str(root), image_size=16)
    assert dm.classes == ("bird", "cat", "dog") and dm.num_classes == 3 and dm.input_shape == (3, 16, 16)
    with caplog.at_level(logging.WARNING, logger="visionlab"):
        dm.setup()
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert len(skipped) == 2
    assert any("broken.png" in m for m in skipped) and any("notes.txt" in m for m in skipped)
    counts = {s: torch.bincount(dm.splits[s][1], minlength=3).tolist() for s in ("train", "val", "test")}
    assert counts == {"train": [14, 15, 14], "val": [3, 3, 3], "test": [3, 3, 3]}  # 20/21/20 per class, 70/15/15
    images, labels = dm.splits["train"]
    assert images.shape[1:] == (3, 16, 16) and images.dtype == torch.uint8
    bird = images[labels == 0].float().mean(dim=(0, 2, 3))
    assert bird[0] > 150 and bird[1] < 80  # RGB order kept
    again = ImageFolderDataModule(root=str(root), image_size=16)
    again.setup()
    assert torch.equal(again.splits["val"][0], dm.splits["val"][0])  # the seeded split repeats


def test_image_folder_grayscale_and_presplit_layout(tmp_path):
    for split, n in (("train", 6), ("val", 2), ("test", 2)):
        make_folder(tmp_path / "pics" / split, per_class=n, size=(20, 20))
    dm = ImageFolderDataModule(root=str(tmp_path / "pics"), image_size=12, color="grayscale")
    dm.setup()
    assert dm.input_shape == (1, 12, 12) and dm.splits["train"][0].shape == (19, 1, 12, 12)
    assert [len(dm.splits[s][1]) for s in ("val", "test")] == [7, 7]


@pytest.mark.parametrize(
    "layout, message",
    [
        ({}, "has no class sub-folders"),
        ({"a": 3, "b": 0}, "class folder.* b hold no files"),
    ],
)
def test_image_folder_listing_errors_come_before_training(tmp_path, layout, message):
    for cls, n in layout.items():
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.new("L", (8, 8), 10 * i).save(tmp_path / cls / f"{i}.png")
    with pytest.raises(ValueError, match=message):
        ImageFolderDataModule(root=str(tmp_path))


def test_image_folder_class_with_only_unreadable_files_is_an_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for i in range(5):
        Image.new("L", (8, 8), 10 * i).save(tmp_path / "a" / f"{i}.png")
    (tmp_path / "b" / "x.png").write_bytes(b"garbage")
    dm = ImageFolderDataModule(root=str(tmp_path))
    with pytest.raises(ValueError, match="class.* b have no readable images"):
        dm.setup()


@pytest.mark.parametrize("loader", ["memory", "dataloader"])
def test_image_folder_trains_the_notes_cnn_on_64x64x3(tmp_path, loader):
    root = make_folder(tmp_path / "pics", per_class=10)
    metrics = run_train(
        tmp_path,
        "data=image_folder",
        f"data.root={root}",
        f"data.loader={loader}",
        "model=cnn",
        "data.augment.crop_padding=4",
        "data.augment.horizontal_flip=true",
    )
    assert 0 <= metrics["test/acc"] <= 1 and "val/acc" in metrics
