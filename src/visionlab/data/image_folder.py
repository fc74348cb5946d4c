"""Your own images: a folder with one sub-folder per class, decoded once into memory.

Layout: `root/<class>/*.png` (split here, 70/15/15 stratified by class with a seed) or
`root/{train,val,test}/<class>/*` (used as given). Every image is decoded, converted to
grayscale or RGB and resized to `image_size` once, in `setup`; then the in-memory path (or
`loader=dataloader`) serves it like any other dataset. Files that are not readable images
are logged by name and reason and skipped; a class left empty is an error before training.
A folder too large for memory is streamed instead (`loader=stream`, visionlab.data.streaming);
`loader=auto` chooses by the decoded size.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from PIL import Image

from visionlab.data.datamodule import LOADERS, InMemoryImageDataModule, Split
from visionlab.data.loaders import MemoryLoader
from visionlab.data.transforms import BatchTransform
from visionlab.utils.checks import Check, integer, is_number, one_of
from visionlab.utils.errors import ConfigError
from visionlab.utils.extras import need, needs
from visionlab.utils.limits import available_bytes, check_decoded_fits, gib

if TYPE_CHECKING:  # the stream path needs the stream extra (litdata): imported when chosen
    from litdata import StreamingDataLoader

    from visionlab.data.streaming import FolderStream

log = logging.getLogger("visionlab")

COLORS = {"rgb": "RGB", "grayscale": "L"}
SPLITS = ("train", "val", "test")


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _walk_files(folder: Path, root: Path, seen: set[Path]) -> list[Path]:
    """Files under `folder`, following symlinks only to places inside `root`, never twice
    into one real folder (so a link loop ends), hidden entries ignored."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = Path(dirpath).resolve()
        if real in seen or not _inside(real, root):
            log.warning("skipping %s: a link %s", dirpath, "loop" if real in seen else f"out of {root}")
            dirnames.clear()
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith(".") or not path.is_file():
                continue
            if not _inside(path.resolve(), root):
                log.warning("skipping %s: a link out of %s", path, root)
                continue
            found.append(path)
    return found


def class_folders(folder: Path) -> dict[str, list[Path]]:
    """Class name -> sorted files under its sub-folder (hidden entries ignored).

    A sub-folder that is a link to the folder itself, to another class or out of the data
    root is not a class: it would hold copies of other images, or images from elsewhere.
    """
    root = folder.resolve()
    classes: dict[str, list[Path]] = {}
    seen: set[Path] = {root}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        real = sub.resolve()
        if real in seen or not _inside(real, root) or any(_inside(s, real) for s in seen if s != root):
            log.warning("skipping %s: a link to %s, not a class folder", sub, real)
            continue
        classes[sub.name] = sorted(_walk_files(sub, root, seen))
    return classes


def decode_image(path: Path, mode: str, size: int) -> np.ndarray:
    """uint8 (C, size, size) array of the image at `path`; raises OSError/ValueError if unreadable."""
    with Image.open(path) as img:
        img = img.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
        array = np.asarray(img, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def stratified_split(labels: torch.Tensor, fractions: Sequence[float], seed: int) -> list[torch.Tensor]:
    """Indices of each part: every class is shuffled with `seed` and cut by `fractions`."""
    gen = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in fractions]
    for cls in labels.unique().tolist():
        idx = (labels == cls).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        bounds = np.round(np.cumsum([0.0, *fractions]) / sum(fractions) * len(idx)).astype(int)
        for k in range(len(fractions)):
            parts[k].append(idx[bounds[k] : bounds[k + 1]])
    return [torch.cat(p).sort().values for p in parts]


class ImageFolderDataModule(InMemoryImageDataModule):
    """A folder of class sub-folders as a dataset, held in memory as uint8 tensors or streamed."""

    loaders = (*LOADERS, "stream", "auto")

    CHECKS: ClassVar[tuple[Check, ...]] = (
        *InMemoryImageDataModule.CHECKS,
        integer("image_size", 1),
        one_of("color", COLORS),
        one_of("loader", loaders),
        needs("loader", "stream", ("litdata",), lambda v: v == "stream", "data."),
        Check("stream_above", lambda v: is_number(v) and 0 < v <= 1, "a share of available memory in (0, 1]"),
    )

    def __init__(
        self,
        root: str | None = None,
        *args: Any,
        image_size: int = 64,
        color: str = "rgb",
        split: Sequence[float] = (0.7, 0.15, 0.15),
        stream_dir: str | None = None,
        stream_above: float = 0.5,
        **kwargs: Any,
    ) -> None:
        if not root:
            raise ConfigError("data.root is not set; give the folder of class sub-folders: data.root=PATH")
        if color not in COLORS:
            raise ConfigError(f"data.color={color!r} is unknown; allowed: {', '.join(COLORS)}")
        if len(split) != 3 or any(f <= 0 for f in split):
            raise ConfigError(f"data.split={list(split)} must be 3 fractions > 0 (train, val, test)")
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(f"data.root={root} is not a folder")
        self.files = self._list_files()
        presplit = "all" not in self.files
        first = self.files["train" if presplit else "all"]
        self.classes = tuple(first)
        self._check_listing(presplit)
        self.image_size, self.color, self.split_fractions = image_size, color, tuple(split)
        self.input_shape = (1 if color == "grayscale" else 3, image_size, image_size)
        kwargs.setdefault("val_size", 0)
        if kwargs.get("loader") == "auto":
            kwargs["loader"] = self._choose_loader(stream_above)
        super().__init__(*args, **kwargs)
        self.stream_dir = Path(stream_dir) if stream_dir else None
        self.stream: FolderStream | None = None
        self._train_stream: StreamingDataLoader | None = None
        self._stream_state: dict[str, Any] | None = None

    def _choose_loader(self, share: float) -> str:
        """`loader=auto`: stream when the decoded images would take more than `share` of the
        memory available now; said in one line of the log."""
        if not 0 < share <= 1:
            raise ConfigError(f"data.stream_above={share} must be a share of available memory in (0, 1]")
        count = sum(len(files) for part in self.files.values() for files in part.values())
        need, free = count * int(np.prod(self.input_shape)), available_bytes("cpu")
        loader = "stream" if need > share * free else "memory"
        log.info(
            "data.loader=auto: %d images of %s decode to %s, %s %.0f%% of the %s available: data.loader=%s",
            count,
            self.input_shape,
            gib(need),
            "over" if loader == "stream" else "within",
            100 * share,
            gib(free),
            loader,
        )
        return loader

    def _list_files(self) -> dict[str, dict[str, list[Path]]]:
        """Split ("all", or train/val/test) -> class -> files."""
        if all((self.root / s).is_dir() for s in SPLITS):
            return {s: class_folders(self.root / s) for s in SPLITS}
        return {"all": class_folders(self.root)}

    def _check_listing(self, presplit: bool) -> None:
        where = f"data.root={self.root}" + (" (train/)" if presplit else "")
        if not self.classes:
            raise ConfigError(f"{where} has no class sub-folders; expected one folder of images per class")
        empty = [c for c, files in self.files["train" if presplit else "all"].items() if not files]
        if empty:
            raise ConfigError(f"{where}: class folder(s) {', '.join(empty)} hold no files")
        for s in ("val", "test") if presplit else ():
            unknown = sorted(set(self.files[s]) - set(self.classes))
            if unknown:
                raise ConfigError(f"{self.root / s} has classes not in train/: {', '.join(unknown)}")

    def prepare_data(self) -> None:
        """Nothing to fetch: the images are the user's; the stream path converts them here
        (once per node, before the ranks' `setup`)."""
        if self.loader == "stream":
            self._open_stream()

    def _open_stream(self) -> FolderStream:
        need("litdata", "stream", "data.loader=stream")
        from visionlab.data.streaming import FolderStream, default_folder

        source = {
            "root": str(self.root.resolve()),
            "classes": list(self.classes),
            "image_size": self.image_size,
            "color": self.color,
            "split": None if "all" not in self.files else list(self.split_fractions),
            "split_seed": self.split_seed,
        }
        folder = self.stream_dir or default_folder(Path(self.data_dir), source)
        decode = partial(decode_image, mode=COLORS[self.color], size=self.image_size)
        return FolderStream.build(
            folder, self.root, self._list_files, source, decode, self._split_readable, self.num_workers
        )

    def _split_readable(self, readable: dict[str, list[tuple[Path, int]]]) -> dict[str, list[tuple[Path, int]]]:
        """The stream path's split of the readable (file, label) pairs: the memory path's."""
        if "all" not in readable:
            parts = readable
            self._check_classes(torch.tensor([label for _, label in parts["train"]], dtype=torch.int64), "train/")
        else:
            labels = torch.tensor([label for _, label in readable["all"]], dtype=torch.int64)
            self._check_classes(labels, "the folder")
            parts = {
                s: [readable["all"][i] for i in idx.tolist()]
                for s, idx in zip(SPLITS, stratified_split(labels, self.split_fractions, self.split_seed))
            }
        self._check_nonempty({s: len(entries) for s, entries in parts.items()})
        return parts

    def read_folder(self, listing: dict[str, list[Path]], name: str) -> Split:
        """Decode every file of `listing`; unreadable ones are reported and skipped."""
        check_decoded_fits(
            sum(map(len, listing.values())), self.input_shape, f"data.root={self.root} ({name})", "data.image_size"
        )
        mode, arrays, labels, skipped = COLORS[self.color], [], [], 0
        for cls, files in listing.items():
            label = self.classes.index(cls)
            for path in files:
                try:
                    arrays.append(decode_image(path, mode, self.image_size))
                except Exception as err:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError...
                    skipped += 1
                    log.warning("skipping %s: %s", path, " ".join(str(err).split()) or type(err).__name__)
                    continue
                labels.append(label)
        if skipped:
            log.warning("%s: skipped %d unreadable file(s) of %d", name, skipped, skipped + len(labels))
        if not arrays:
            raise ConfigError(f"data.root={self.root}: no readable images in {name}")
        return torch.from_numpy(np.stack(arrays)), torch.tensor(labels, dtype=torch.int64)

    def setup(self, stage: str | None = None) -> None:
        if self.splits or self.stream is not None:
            return
        if self.loader == "stream":
            self.stream = self._open_stream()
            self.mean, self.std = (
                self.stream.stats
                if self.normalization == "standardize"
                else ((0.0,) * self.input_shape[0], (1.0,) * self.input_shape[0])
            )
            return
        if "all" in self.files:
            images, labels = self.read_folder(self.files["all"], "all images")
            self._check_classes(labels, "the folder")
            parts = stratified_split(labels, self.split_fractions, self.split_seed)
            self.splits = {s: (images[idx], labels[idx]) for s, idx in zip(SPLITS, parts)}
        else:
            self.splits = {s: self.read_folder(self.files[s], f"{s}/") for s in SPLITS}
            self._check_classes(self.splits["train"][1], "train/")
        self._check_nonempty({s: len(labels) for s, (_, labels) in self.splits.items()})
        self.mean, self.std = self._stats(self.splits["train"][0])

    def _check_nonempty(self, counts: dict[str, int]) -> None:
        for s, n in counts.items():
            if n == 0:
                raise ConfigError(f"data.root={self.root}: the {s} split is empty; add images or change data.split")

    # --- the stream path ------------------------------------------------------------------
    def opened_stream(self) -> FolderStream:
        """The converted stream folder, once `setup` has opened it."""
        if self.stream is None:
            raise RuntimeError("the stream folder is not open yet: call prepare_data() and setup() first")
        return self.stream

    def transform(self, train: bool = False) -> BatchTransform:
        if self.loader != "stream":
            return super().transform(train)
        n = self.opened_stream().counts["train"] if train else 0
        return BatchTransform(self.mean, self.std, self.augment if train else None, self.seed, n, self.num_classes)

    def _loader(self, split: str) -> MemoryLoader | StreamingDataLoader:
        if self.loader != "stream":
            return super()._loader(split)
        self.setup()
        train = split == "train"
        transform = self.transform(train)
        loader = self.opened_stream().loader(
            split,
            self.batch_size if train else self.eval_batch_size,
            transform,
            augment=train,
            seed=self.seed,
            num_workers=self.num_workers,
            steps_done=(lambda: self._env().steps_done) if train else None,
            pin_memory=self._env().device.type == "cuda",
        )
        if train:
            self._train_transform = transform  # its mixup / cutmix runs after the transfer
            self._train_stream = loader
            if self._stream_state is not None:
                loader.load_state_dict(self._stream_state)
                self._stream_state = None
        return loader

    # The training stream's position is saved here as well as in Lightning's loop state:
    # Lightning hands its copy only to a loader made after the checkpoint is read, and a
    # scheduler that asks for the run's length (one-cycle) has the loader made before.
    def state_dict(self) -> dict[str, Any]:
        if self._train_stream is not None:
            return {"train_stream": self._train_stream.state_dict()}
        return super().state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "train_stream" in state:
            self._stream_state = state["train_stream"]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Stream path: the workers augmented and normalised each image; mixing needs the batch."""
        if self.loader != "stream":
            return super().on_after_batch_transfer(batch, dataloader_idx)
        x, labels, index = batch
        if self.trainer is not None and self.trainer.training:
            return self._train_transform.mix_batch(x, labels, index, self.trainer.current_epoch)
        return x, labels

    def _check_classes(self, labels: torch.Tensor, where: str) -> None:
        counts = torch.bincount(labels, minlength=self.num_classes)
        empty = [c for c, n in zip(self.classes, counts.tolist()) if n == 0]
        if empty:
            raise ConfigError(f"data.root={self.root}: class(es) {', '.join(empty)} have no readable images in {where}")
