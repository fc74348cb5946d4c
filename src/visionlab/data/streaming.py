"""Image folders larger than memory: converted once into litdata chunks, then streamed.

`data.loader=stream` decodes every image once (resized, in the folder's colour mode, as
the memory path decodes it), skips the unreadable ones by name, splits the rest as the
memory path does, and writes each split with litdata's `optimize`. The per-channel
statistics of the training split are summed exactly (integers) during the scan and kept
in the stream's manifest. Training then reads through litdata's `StreamingDataLoader`:
its workers deserialize, augment and normalise each image with the same BatchTransform
and the same (seed, epoch, sample index) draws as the memory path; mixup / cutmix, which
need the batch, run after the transfer. litdata shards each split across DDP ranks and
workers, and its loader state travels in the checkpoint for a mid-epoch resume.

A stream folder is trusted only through its manifest, written last, inside a temporary
folder that is renamed into place: a killed conversion leaves a `.part` folder (removed by
the next conversion), never a folder that looks complete. The manifest names what the
stream was made from (folder, image size, colour, split) and the folder's file list with
sizes and modification times; a changed folder is converted again, a folder made from
other data is refused.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from functools import partial
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from litdata import StreamingDataLoader, StreamingDataset, optimize
from torch import Tensor

from visionlab.data.datamodule import channel_stats
from visionlab.data.transforms import BatchTransform
from visionlab.utils.errors import ConfigError
from visionlab.utils.io import atomic_write

log = logging.getLogger("visionlab")
logging.getLogger("litdata").setLevel(logging.WARNING)  # its INFO lines repeat for every split and epoch

MANIFEST = "visionlab_stream.json"
FORMAT = 1
CHUNK_BYTES = "64MB"
# Conversion workers: forked where the OS can (they start in milliseconds, against seconds
# for spawned ones that import torch again); they decode images only, never touch CUDA.
START = "fork" if "fork" in get_all_start_methods() else "spawn"
Listing = dict[str, dict[str, list[Path]]]  # split ("all", or train/val/test) -> class -> files
Decoder = Callable[[Path], np.ndarray]


def files_digest(root: Path, listing: Listing) -> str:
    """sha256 of every listed file's path (relative to `root`), size and modification time."""
    digest = hashlib.sha256()
    for part, classes in listing.items():
        for cls, files in classes.items():
            for path in files:
                try:
                    st = path.stat()
                    size = f"{st.st_size}\0{st.st_mtime_ns}"
                except FileNotFoundError:
                    size = "gone"
                digest.update(f"{part}\0{cls}\0{path.relative_to(root)}\0{size}\n".encode())
    return digest.hexdigest()


def default_folder(cache: Path, source: dict[str, Any]) -> Path:
    """The stream folder of `source` under the data cache: one per folder and decoding choice."""
    key = hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:12]
    return cache / "streams" / f"{Path(source['root']).name}-{key}"


# --- conversion --------------------------------------------------------------------------
def _scan_one(decode: Decoder, path: Path) -> tuple[list[int], list[int]] | str:
    """Per-channel sums of the decoded image and of its squares (exact integers), or why it
    cannot be read."""
    try:
        array = decode(path).astype(np.int64)
    except Exception as err:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError...
        return " ".join(str(err).split()) or type(err).__name__
    return array.sum(axis=(1, 2)).tolist(), (array * array).sum(axis=(1, 2)).tolist()


def _encode(decode: Decoder, entry: tuple[str, int, int]) -> dict[str, Any]:
    """One stream item: the decoded uint8 image, its label and its index in its split."""
    path, label, index = entry
    return {"image": torch.from_numpy(decode(Path(path)).copy()), "label": label, "index": index}


def _scan(decode: Decoder, paths: Sequence[Path], workers: int) -> list[tuple[list[int], list[int]] | str]:
    if workers <= 0:
        return [_scan_one(decode, p) for p in paths]
    with ProcessPoolExecutor(workers, mp_context=get_context(START)) as pool:
        return list(pool.map(partial(_scan_one, decode), paths, chunksize=max(1, len(paths) // (8 * workers))))


@contextmanager
def _locked(target: Path) -> Iterator[None]:
    """One conversion of `target` at a time (ranks of one node, or two runs)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class FolderStream:
    """A converted image folder: its manifest and litdata loaders over its splits."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder, self.manifest = folder, manifest

    @property
    def counts(self) -> dict[str, int]:
        return self.manifest["counts"]

    @property
    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return tuple(self.manifest["mean"]), tuple(self.manifest["std"])

    @staticmethod
    def read_manifest(folder: Path) -> dict[str, Any] | None:
        try:
            return json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError):
            return None

    @classmethod
    def open(cls, folder: Path, source: dict[str, Any], digest: str) -> FolderStream | None:
        """The stream at `folder` if it is complete and made from `source` as it is now;
        None if it is missing or out of date; an error if it is not a stream of `source`."""
        if not folder.exists():
            return None
        manifest = cls.read_manifest(folder)
        if manifest is None or "source" not in manifest:
            raise ConfigError(
                f"data.stream_dir={folder} exists but holds no complete stream ({MANIFEST} "
                "missing): a half-written or foreign folder; delete it or choose another data.stream_dir"
            )
        if manifest["source"] != source:
            made = ", ".join(f"{k}={v}" for k, v in manifest["source"].items() if source.get(k) != v)
            raise ConfigError(
                f"data.stream_dir={folder} was made from other data ({made}); choose another "
                "data.stream_dir or delete that folder"
            )
        if manifest.get("format") != FORMAT or manifest.get("files") != digest:
            return None
        return cls(folder, manifest)

    @classmethod
    def build(
        cls,
        folder: Path,
        root: Path,
        listing: Callable[[], Listing],
        source: dict[str, Any],
        decode: Decoder,
        split: Callable[[dict[str, list[tuple[Path, int]]]], dict[str, list[tuple[Path, int]]]],
        workers: int,
    ) -> FolderStream:
        """Open the stream at `folder`, converting the folder first when it is missing or out
        of date. `listing` lists the folder (again after a conversion, to see what changed
        during it); `split` turns the readable (file, label) pairs of each listing part into
        the train/val/test parts (and checks them)."""
        with _locked(folder):
            files = listing()
            digest = files_digest(root, files)
            stream = cls.open(folder, source, digest)
            if stream is not None:
                return stream
            for stale in folder.parent.glob(f".{folder.name}.*.part"):
                shutil.rmtree(stale, ignore_errors=True)  # a killed conversion's (we hold the lock)
            if folder.exists():
                log.info("%s changed since %s was made from it: converting it again", root, folder)
            manifest = _convert(folder, root, files, listing, source, digest, decode, split, workers)
        return cls(folder, manifest)

    def loader(
        self,
        split: str,
        batch_size: int,
        transform: BatchTransform,
        *,
        augment: bool,
        seed: int,
        num_workers: int,
        steps_done: Callable[[], int] | None = None,
        pin_memory: bool = False,
    ) -> StreamingDataLoader:
        """A StreamingDataLoader of (float image, label, index) batches of `split`;
        `steps_done` (training): the batches the trainer has finished in this epoch;
        `pin_memory`: for a GPU, whose non_blocking copy of pinned batches does not make the host wait."""
        train = split == "train"
        # training: litdata's default, every image but under DDP, where each rank must run as
        # many steps (its shard then ends at a whole batch); evaluation: every image
        dataset = StreamedImages(
            self.folder / split,
            transform,
            augment=augment,
            shuffle=train,
            seed=seed,
            drop_last=None if train else False,
        )
        if steps_done is None:
            return StreamingDataLoader(dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        return TrainingStreamLoader(
            dataset, steps_done, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory
        )


def _convert(
    folder: Path,
    root: Path,
    listing: Listing,
    relist: Callable[[], Listing],
    source: dict[str, Any],
    digest: str,
    decode: Decoder,
    split: Callable[[dict[str, list[tuple[Path, int]]]], dict[str, list[tuple[Path, int]]]],
    workers: int,
) -> dict[str, Any]:
    classes = source["classes"]
    readable: dict[str, list[tuple[Path, int]]] = {}
    sums: dict[Path, tuple[list[int], list[int]]] = {}
    skipped: list[str] = []
    for part, by_class in listing.items():
        entries = [(path, classes.index(cls)) for cls, files in by_class.items() for path in files]
        readable[part] = []
        for (path, label), result in zip(entries, _scan(decode, [p for p, _ in entries], workers)):
            if isinstance(result, str):
                log.warning("skipping %s: %s", path, result)
                skipped.append(str(path.relative_to(root)))
                continue
            sums[path] = result
            readable[part].append((path, label))
    if skipped:
        log.warning("%s: skipped %d unreadable file(s) of %d", root, len(skipped), len(skipped) + len(sums))
    parts = split(readable)
    train = parts["train"]
    channel_sums = np.asarray(np.sum([sums[p][0] for p, _ in train], axis=0, dtype=np.int64))
    channel_squares = np.asarray(np.sum([sums[p][1] for p, _ in train], axis=0, dtype=np.int64))
    pixels = len(train) * source["image_size"] ** 2
    mean, std = channel_stats(channel_sums.tolist(), channel_squares.tolist(), pixels)
    log.info(
        "converting %s into %s (%s images)",
        root,
        folder,
        " / ".join(f"{len(parts[s])} {s}" for s in ("train", "val", "test")),
    )
    with _swapped_in(folder) as tmp:
        for name, entries in parts.items():
            try:
                optimize(
                    partial(_encode, decode),
                    [(str(p), label, i) for i, (p, label) in enumerate(entries)],
                    output_dir=str(tmp / name),
                    chunk_bytes=CHUNK_BYTES,
                    num_workers=max(1, workers),
                    reorder_files=False,
                    keep_data_ordered=True,
                    start_method=START,
                    verbose=False,
                )
            except Exception:
                if files_digest(root, relist()) != digest:
                    break  # reported below
                raise
        if files_digest(root, relist()) != digest:
            raise ConfigError(
                f"data.root={root} changed while it was converted into {folder}; run again once "
                "it has stopped changing (nothing was kept)"
            )
        manifest = {
            "format": FORMAT,
            "source": source,
            "files": digest,
            "counts": {s: len(e) for s, e in parts.items()},
            "mean": mean,
            "std": std,
            "skipped": skipped,
        }
        atomic_write(tmp / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


@contextmanager
def _swapped_in(folder: Path) -> Iterator[Path]:
    """A temporary folder beside `folder` that replaces it once complete. Killed before, it
    stays a `.part` folder; killed between the two renames, no stream is left (converted
    again next time); never a half-written folder under the stream's name."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".part", dir=folder.parent))
    try:
        yield tmp
        old = folder.parent / f".{folder.name}.old.part"
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.rename(folder, old)
        os.rename(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- reading -----------------------------------------------------------------------------
class StreamedImages(StreamingDataset):
    """One split of a stream as (float image, label, index) items: decoded, augmented (with
    the draws of the item's index and the epoch) and normalised in the loader's workers."""

    def __init__(
        self,
        folder: Path,
        image_transform: BatchTransform,
        *,
        augment: bool,
        shuffle: bool,
        seed: int,
        drop_last: bool | None,
    ) -> None:
        super().__init__(str(folder), shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.image_transform, self.augment = image_transform, augment

    def __getitem__(self, index: Any) -> tuple[Tensor, int, int]:
        item = super().__getitem__(index)
        image, i = item["image"][None], item["index"]
        if self.augment:  # litdata counts epochs from 1, Lightning from 0
            x = self.image_transform(image, torch.tensor([i]), self.current_epoch - 1)
        else:
            x = self.image_transform(image)
        return x[0], item["label"], i


class TrainingStreamLoader(StreamingDataLoader):
    """A StreamingDataLoader whose saved state counts the batches the trainer has finished,
    not those fetched: Lightning fetches one batch ahead, which a resume must not skip.

    It adjusts two of litdata's own counters while saving (litdata 0.2.76, pinned); the
    resume tests in tests/test_streaming.py notice if they change."""

    # litdata's attributes this class reads and writes (set in StreamingDataLoader.__init__)
    restore: bool
    _num_samples_yielded_streaming: int
    _latest_worker_idx: int

    def __init__(self, dataset: StreamedImages, steps_done: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.steps_done = steps_done
        self._restored_served = False  # whether the restored position has served batches

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        super().load_state_dict(obj)
        self._restored_served = False

    def __iter__(self) -> Iterator[Any]:
        # Lightning ends a resumed epoch by its count of batches, so litdata never sees the
        # restored pass end and would restore it again next epoch: once a restored pass has
        # served batches, an epoch that starts with no batch done starts afresh.
        if self.restore and self._restored_served and self.steps_done() == 0:
            self.restore = False
        for batch in super().__iter__():
            self._restored_served = self._restored_served or self.restore
            yield batch

    def state_dict(self) -> dict[str, Any]:
        fetched, latest = self._num_samples_yielded_streaming, self._latest_worker_idx
        done = self.steps_done()
        if done * self.batch_size < fetched:
            self._num_samples_yielded_streaming = done * self.batch_size
            self._latest_worker_idx = (done - 1) % max(1, self.num_workers)
        try:
            return super().state_dict()
        finally:
            self._num_samples_yielded_streaming, self._latest_worker_idx = fetched, latest
