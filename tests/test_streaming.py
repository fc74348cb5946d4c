"""The stream path of image folders (litdata): conversion once, the memory path's tensors,
a killed conversion, DDP shards, a mid-epoch resume, and bad stream folders."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_main
from test_resume import assert_same, final_state, run_train, stall, wait_for
from visionlab.app.config import compose_config
from visionlab.app.fit import train
from visionlab.data import ImageFolderDataModule, image_folder
from visionlab.data.streaming import MANIFEST
from visionlab.entrypoints.train import main as train_main
from visionlab.utils.errors import ConfigError

COLOURS = {"bird": (200, 30, 30), "cat": (30, 200, 30), "dog": (30, 30, 200)}
TESTS = Path(__file__).parent


def make_folder(root: Path, per_class: int = 70) -> Path:
    """PNG and JPEG images (alternating, of two sizes) of one noisy colour per class, and one
    corrupt JPEG."""
    rng = np.random.default_rng(0)
    for cls, rgb in COLOURS.items():
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            size = (24, 20) if i % 2 else (20, 24)
            pixels = np.clip(np.array(rgb) + rng.integers(-40, 40, (*size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i:03d}.{'jpg' if i % 2 else 'png'}")
    (root / "cat" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(100))
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("pics") / "pics")


def stream_module(root: Path, cache: Path, **kw) -> ImageFolderDataModule:
    return ImageFolderDataModule(root=str(root), image_size=16, loader="stream", data_dir=str(cache), **kw)


def by_index(loader, epochs: int = 1) -> list[dict[int, tuple[torch.Tensor, int]]]:
    """Per epoch: sample index -> (image tensor, label) as the loader served them."""
    out = []
    for _ in range(epochs):
        seen = {}
        for x, y, index in loader:
            seen.update({int(i): (xi, int(yi)) for xi, yi, i in zip(x, y, index)})
        out.append(seen)
    return out


def test_stream_trains_a_short_epoch_and_converts_once(folder, tmp_path, caplog):
    cache = tmp_path / "cache"
    args = [
        "data=image_folder",
        f"data.root={folder}",
        "data.loader=stream",
        f"data.data_dir={cache}",
        "data.image_size=16",
        "data.num_workers=1",
        "data.batch_size=32",
        "model=cnn",
        "trainer.max_epochs=1",
        "logger=csv",
        "~callbacks.model_summary",
        "~callbacks.progress_bar",
        "trainer.enable_progress_bar=false",
        "trainer.num_sanity_val_steps=0",
        "data.augment.horizontal_flip=true",
        "data.augment.mixup=0.2",
    ]
    with caplog.at_level(logging.INFO, logger="visionlab"):
        metrics = train(compose_config(args, output_dir=tmp_path / "run1"))
    assert 0 <= metrics["test/acc"] <= 1 and metrics["train/loss"] > 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("skipping" in m and "corrupt.jpg" in m for m in messages)
    (stream,) = (p for p in (cache / "streams").iterdir() if not p.name.startswith("."))
    manifest = json.loads((stream / MANIFEST).read_text())
    assert manifest["skipped"] == ["cat/corrupt.jpg"] and sum(manifest["counts"].values()) == 210
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="visionlab"):
        train(compose_config(args, output_dir=tmp_path / "run2"))
    assert not any(m.startswith("converting") for m in (r.getMessage() for r in caplog.records))


def test_memory_and_stream_paths_give_the_same_tensors(folder, tmp_path):
    augment = {
        "rotation": 15,
        "zoom": 0.1,
        "horizontal_flip": True,
        "contrast": 0.2,
        "crop_padding": 2,
        "randaugment": True,
    }
    memory = ImageFolderDataModule(root=str(folder), image_size=16, augment=augment)
    memory.setup()
    stream = stream_module(folder, tmp_path, augment=augment, num_workers=1, batch_size=16, eval_batch_size=16)
    stream.prepare_data()
    stream.setup()
    assert stream.stream.counts == {s: len(memory.splits[s][1]) for s in ("train", "val", "test")}
    # statistics: exact integer sums against float32 sums, so equal to float32 precision
    assert np.allclose(stream.mean, memory.mean, rtol=1e-6) and np.allclose(stream.std, memory.std, rtol=1e-6)
    stream.mean, stream.std = memory.mean, memory.std  # then every tensor must be the memory path's exactly
    images, labels = memory.splits["train"]
    reference = memory.transform(train=True)
    served = by_index(stream.train_dataloader(), epochs=2)
    for epoch, seen in enumerate(served):
        assert sorted(seen) == list(range(len(labels)))
        expected = reference(images, torch.arange(len(labels)), epoch)
        assert all(torch.equal(x, expected[i]) and y == labels[i] for i, (x, y) in seen.items())
    assert not torch.equal(served[0][0][0], served[1][0][0])  # epochs draw anew
    images, labels = memory.splits["test"]
    expected = memory.transform()(images)
    (seen,) = by_index(stream.test_dataloader())
    assert sorted(seen) == list(range(len(labels)))
    assert all(torch.equal(x, expected[i]) and y == labels[i] for i, (x, y) in seen.items())


def convert_slowly(root: Path, cache: Path) -> None:
    """A conversion in its own process group whose images each take a while to decode."""
    os.setsid()
    decode = image_folder.decode_image

    def slow_decode(*args, **kwargs):
        time.sleep(0.01)
        return decode(*args, **kwargs)

    image_folder.decode_image = slow_decode
    stream_module(root, cache).prepare_data()


def test_a_killed_conversion_leaves_no_stream_and_the_next_run_converts(folder, tmp_path):
    cache = tmp_path / "cache"
    proc = multiprocessing.get_context("fork").Process(target=convert_slowly, args=(folder, cache))
    proc.start()
    deadline = time.monotonic() + 120
    while not list((cache / "streams").glob(".*.part/train")):
        assert proc.is_alive(), f"the conversion ended ({proc.exitcode}) before it was killed"
        assert time.monotonic() < deadline, "the conversion never started writing"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the conversion and its workers
    proc.join(timeout=30)
    left = sorted(p.name for p in (cache / "streams").iterdir())
    assert all(name.startswith(".") for name in left), left  # only the .part folder and the lock
    dm = stream_module(folder, cache)
    dm.prepare_data()
    dm.setup()
    assert sorted(p.name for p in (cache / "streams").iterdir() if not p.name.startswith(".")) == [
        dm.stream.folder.name
    ]
    assert not list((cache / "streams").glob("*.part"))
    memory = ImageFolderDataModule(root=str(folder), image_size=16)
    memory.setup()
    images, labels = memory.splits["val"]
    (seen,) = by_index(dm.val_dataloader())
    expected = memory.transform()(images)
    assert len(seen) == len(labels)
    assert all(torch.allclose(x, expected[i], atol=1e-5) and y == labels[i] for i, (x, y) in seen.items())


def test_changed_folder_is_converted_again_and_bad_stream_folders_are_refused(folder, tmp_path):
    root = tmp_path / "pics"
    make_folder(root, per_class=6)
    dm = stream_module(root, tmp_path / "cache")
    dm.setup()
    first = dm.stream.counts
    Image.new("RGB", (20, 20), (30, 200, 30)).save(root / "cat" / "new.png")
    again = stream_module(root, tmp_path / "cache")
    again.setup()
    assert again.stream.folder == dm.stream.folder and sum(again.stream.counts.values()) == sum(first.values()) + 1
    other = stream_module(folder, tmp_path / "elsewhere", stream_dir=str(dm.stream.folder))
    with pytest.raises(ConfigError, match=f"data.stream_dir={dm.stream.folder} was made from other data .*root="):
        other.prepare_data()
    half = tmp_path / "half"
    (half / "train").mkdir(parents=True)
    (half / "train" / "chunk-0-0.bin").write_bytes(b"\0" * 10)
    code, err = run_main(
        train_main,
        [
            "data=image_folder",
            f"data.root={root}",
            "data.loader=stream",
            f"data.stream_dir={half}",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
    )
    assert code == 2 and f"data.stream_dir={half} exists but holds no complete stream" in err
    assert len([line for line in err.splitlines() if "data.stream_dir" in line]) == 1


def test_presplit_folders_stream_the_splits_as_given(tmp_path):
    for split, n in (("train", 8), ("val", 3), ("test", 2)):
        make_folder(tmp_path / "pics" / split, per_class=n)
    stream = stream_module(tmp_path / "pics", tmp_path / "cache")
    stream.setup()
    memory = ImageFolderDataModule(root=str(tmp_path / "pics"), image_size=16)
    memory.setup()
    assert stream.stream.counts == {"train": 24, "val": 9, "test": 6}  # the corrupt JPEG of each split skipped
    assert stream.stream.counts == {s: len(memory.splits[s][1]) for s in ("train", "val", "test")}


def test_a_folder_that_changes_during_conversion_is_named_and_nothing_is_kept(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "pics", per_class=6)
    decode = image_folder.decode_image

    def decode_and_add(path, *args, **kwargs):
        (root / "bird" / "late.png").exists() or Image.new("RGB", (9, 9)).save(root / "bird" / "late.png")
        return decode(path, *args, **kwargs)

    monkeypatch.setattr(image_folder, "decode_image", decode_and_add)
    dm = stream_module(root, tmp_path / "cache")
    with pytest.raises(ConfigError, match=f"data.root={root} changed while it was converted into .*nothing was kept"):
        dm.prepare_data()
    assert all(p.name.endswith(".lock") for p in (tmp_path / "cache" / "streams").iterdir())


@pytest.mark.parametrize("free, chosen", [(10**12, "memory"), (10**5, "stream")])
def test_auto_streams_when_the_decoded_folder_passes_the_share_of_memory(folder, monkeypatch, caplog, free, chosen):
    monkeypatch.setattr("visionlab.data.image_folder.available_bytes", lambda device="cpu": free)
    with caplog.at_level(logging.INFO, logger="visionlab"):
        dm = ImageFolderDataModule(root=str(folder), image_size=16, loader="auto", stream_above=0.5)
    assert dm.loader == chosen
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("data.loader=auto")]
    assert "211 images of (3, 16, 16)" in line and line.endswith(f"data.loader={chosen}")


@pytest.mark.slow
def test_ddp_ranks_stream_disjoint_shards_that_cover_the_splits(folder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(TESTS / "helpers" / "stream_ranks.py"),
            str(folder),
            str(tmp_path / "cache"),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    counts = json.loads(next((tmp_path / "cache" / "streams").glob("*/" + MANIFEST)).read_text())["counts"]
    for split in ("train", "val"):
        a, b = (set(r[split]) for r in ranks)
        assert not a & b and len(ranks[0][split]) == len(a)
        # training shards end at a whole batch per rank (litdata under DDP); evaluation sees all
        expected = counts[split] if split == "val" else counts[split] // 8 * 8
        assert len(a | b) == expected and a | b <= set(range(counts[split]))


@pytest.mark.slow
def test_stream_resumed_mid_epoch_ends_with_the_uninterrupted_weights(folder, tmp_path):
    common = [
        "data=image_folder",
        f"data.root={folder}",
        "data.loader=stream",
        f"data.data_dir={tmp_path / 'cache'}",
        "data.image_size=8",
        "data.num_workers=1",
        "data.batch_size=16",
        "model=mlp",
        "data.augment.rotation=10",
        "data.augment.horizontal_flip=true",
        "trainer.max_epochs=3",
        "trainer.deterministic=true",
        "logger=csv",
        "callbacks.progress_bar.refresh_rate=0",
    ]  # the default one-cycle schedule
    done = run_train(common, tmp_path / "reference")
    assert done.returncode == 0, done.stderr[-3000:]
    marker = tmp_path / "stalled"
    proc = run_train([*common, *stall(epoch=1, step=2, marker=marker)], tmp_path / "stopped", wait=False)
    wait_for(marker, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143, proc.stderr.read()[-3000:]
    run = tmp_path / "stopped" / "run"
    resumed = run_train([f"ckpt_path={run}/checkpoints/last.ckpt", "~callbacks.stall"], tmp_path / "stopped")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same(final_state(tmp_path / "reference" / "run"), final_state(run))


def test_evaluate_and_predict_read_a_streamed_run_s_splits_into_memory(folder, tmp_path):
    from omegaconf import OmegaConf

    from visionlab.app.runs import build_datamodule

    data = {
        "_target_": "visionlab.data.image_folder.ImageFolderDataModule",
        "root": str(folder),
        "image_size": 16,
        "data_dir": str(tmp_path),
        "loader": "stream",
    }
    datamodule = build_datamodule(OmegaConf.create({"data": data}))
    streamed = stream_module(folder, tmp_path / "stream")
    streamed.prepare_data()
    streamed.setup()
    assert datamodule.loader == "memory"
    assert len(datamodule.splits["test"][1]) == streamed.opened_stream().counts["test"] > 0


def test_tree_memory_counts_the_children_of_the_process():
    from visionlab.tools.stream_benchmark import TreeMemory

    grow = "import time; b = bytearray(200 << 20); time.sleep(1.5)"
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grow!r}])"]
    )
    memory = TreeMemory(parent.pid, interval=0.05)
    parent.wait(timeout=60)
    memory.stop()
    assert memory.peak_rss >= 200 << 20 and memory.peak_pss >= 190 << 20
