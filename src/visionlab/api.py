"""The Python API for notebooks: the scripts' entry points, called with the same overrides.

    metrics = visionlab.train(["model=mlp", "trainer.max_epochs=1"])
    model = visionlab.load_model("outputs/runs/DATE/TIME/checkpoints/last.ckpt")
    model.predict("shoe.png")       # or uint8 arrays, tensors, PIL images, lists of them
    model.evaluate("test")

Nothing here re-implements a script: `train` composes and checks the config exactly as
`scripts/train.py` does (visionlab.app.cli.prepare_run) and calls the same `train`; `Model`
holds what evaluate and predict load and runs their functions.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import Tensor

from visionlab.app.cli import _is_multirun, prepare_run
from visionlab.app.config import ConfigError, compose_config
from visionlab.data.formats.images import image_to_tensor, read_image
from visionlab.training.checkpoint import LoadedModel
from visionlab.utils.io import atomic_write

ImageLike = str | Path | Image.Image | np.ndarray | Tensor
MAX_PIXELS = 25_000_000  # as predict.max_pixels


def data_cache() -> Path:
    """Where the API keeps data sets unless $VISIONLAB_ROOT or `paths.data_dir=` says
    otherwise: the user's cache folder ($XDG_CACHE_HOME, else ~/.cache)/visionlab/data."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "visionlab" / "data"


def _placed(overrides: Sequence[str], root: str | Path | None) -> list[str]:
    """`overrides` after the API's own placement: runs under `root`/outputs (else
    $VISIONLAB_ROOT/outputs, else ./outputs, as the commands), data in $VISIONLAB_ROOT/data
    or else `data_cache()`, not in whatever folder a notebook runs in. Overrides win."""
    placed = [] if root is None else [f"paths.root_dir='{Path(root).expanduser().resolve()}'"]
    if not os.environ.get("VISIONLAB_ROOT"):
        placed.append(f"paths.data_dir='{data_cache()}'")
    return [*placed, *overrides]


def _say_where(what: str, cfg: DictConfig, folder: Path, shown: bool | None = None) -> None:
    """Log where `what` writes and reads; print it too where nothing shows the visionlab log
    (`shown`: whether anything did before the caller added its own handlers)."""
    logger = logging.getLogger("visionlab")
    message = f"visionlab.{what}: writing to {folder.resolve()}; data in {Path(cfg.paths.data_dir).resolve()}"
    if not (logger.hasHandlers() if shown is None else shown):
        print(message, file=sys.stderr)
    logger.info(message)


def train(overrides: Sequence[str] = (), root: str | Path | None = None) -> dict[str, float]:
    """`python scripts/train.py OVERRIDES...` in this process; returns the final metrics.

    The run gets its folder as on the command line (ROOT/outputs/runs/DATE/TIME, or
    `hydra.run.dir=...`), with .hydra/config.yaml, train.log and everything train writes;
    ROOT is `root`, else $VISIONLAB_ROOT, else the current folder. Data sets go to
    $VISIONLAB_ROOT/data, else `data_cache()` (or `paths.data_dir=...`). Both are logged.
    `ckpt_path=...` resumes as on the command line. Sweeps (`-m`) need the command line.
    """
    from visionlab.entrypoints.train import CHECKS as TRAIN_CHECKS
    from visionlab.entrypoints.train import train as train_run

    if _is_multirun(overrides):
        raise ConfigError("visionlab.train runs one job; sweeps (-m) run from the command line: scripts/train.py -m ...")
    argv, lock = prepare_run("train", _placed(overrides, root), TRAIN_CHECKS, resumes=True, locks=True)
    try:
        pinned = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")]  # by prepare_run's lock
        run_dir = Path(pinned[-1] if pinned else str(compose_config(argv).hydra.run.dir))
        cfg = compose_config(argv, output_dir=run_dir)
        if "hydra.output_subdir=null" not in argv:  # a resume keeps the run's own .hydra/
            hydra_dir = run_dir / ".hydra"
            atomic_write(hydra_dir / "config.yaml", OmegaConf.to_yaml({k: v for k, v in cfg.items() if k != "hydra"}))
            atomic_write(hydra_dir / "overrides.yaml", yaml.safe_dump(list(overrides)))
        log_file = logging.FileHandler(run_dir / "train.log")
        log_file.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        logger = logging.getLogger("visionlab")
        shown = logger.hasHandlers()
        logger.addHandler(log_file)
        _say_where("train", cfg, run_dir, shown)
        try:
            return train_run(cfg)
        finally:
            logger.removeHandler(log_file)
            log_file.close()
    finally:
        if lock is not None:
            lock.release()


def _entry_config(name: str, ckpt: str | Path, overrides: Sequence[str], root: str | Path | None) -> DictConfig:
    """The config of entry point `name` for `ckpt`, checked as on the command line, writing
    (if it writes) where the command line would: its own folder under ROOT/outputs/ (see `train`)."""
    entry = importlib.import_module(f"visionlab.entrypoints.{name}")
    argv, _ = prepare_run(name, _placed([f"ckpt_path={ckpt}", *overrides], root), entry.CHECKS)
    out = str(compose_config(argv, config_name=name).hydra.run.dir)
    return compose_config(argv, output_dir=out, config_name=name)


def _as_images(images: ImageLike | Sequence[ImageLike], input_shape: tuple[int, ...]) -> Tensor:
    """A uint8 (N, C, H, W) batch, every item converted the way predict.py converts files."""
    single = isinstance(images, (str, Path, Image.Image)) or (
        isinstance(images, (np.ndarray, Tensor)) and images.ndim <= 3)
    items = [images] if single else list(cast(Sequence[ImageLike], images))
    out = []
    for item in items:
        if isinstance(item, (str, Path)):
            out.append(read_image(item, input_shape, MAX_PIXELS))
            continue
        if isinstance(item, Tensor):  # a tensor is (C, H, W) or (H, W), as torchvision's
            item = item.detach().cpu().numpy()
            item = item.transpose(1, 2, 0) if item.ndim == 3 else item
        if isinstance(item, np.ndarray):
            if item.dtype != np.uint8:
                raise ConfigError(f"images: a {item.dtype} array; expected uint8 pixels (0-255)")
            item = Image.fromarray(item[..., 0] if item.ndim == 3 and item.shape[2] == 1 else item)
        if not isinstance(item, Image.Image):
            raise ConfigError(f"images: a {type(item).__name__}; expected a path, a PIL image, a uint8 array or tensor")
        out.append(image_to_tensor(item, input_shape))
    return torch.stack(out)


@dataclass
class Model:
    """A trained net with what feeding it needs, and its run's config for evaluation."""

    loaded: LoadedModel
    config: DictConfig
    root: str | Path | None = None

    @property
    def classes(self) -> tuple[str, ...]:
        return self.loaded.classes

    @property
    def net(self) -> torch.nn.Module:
        return self.loaded.net

    def probabilities(self, images: ImageLike | Sequence[ImageLike], batch_size: int = 256) -> Tensor:
        """(N, classes) probabilities of the images, preprocessed exactly as in training."""
        from visionlab.app.runs import probabilities

        return probabilities(self.loaded, _as_images(images, self.loaded.input_shape), batch_size,
                             torch.device("cpu"))

    def predict(self, images: ImageLike | Sequence[ImageLike], top_k: int = 3) -> list[dict[str, Any]]:
        """Per image: the most probable class, its probability and the top-k (class, p) pairs."""
        from visionlab.entrypoints.predict import top_k as best_of

        probs = self.probabilities(images)
        return [{"class": top[0][0], "probability": top[0][1], "top": top}
                for top in best_of(probs, self.classes, top_k)]

    def evaluate(self, split: str = "test", overrides: Sequence[str] = ()) -> dict[str, float]:
        """evaluate.py's metrics for `split`, written into a new folder ROOT/outputs/evaluate/DATE/TIME
        (logged; ROOT as in `train`)."""
        from visionlab.entrypoints.evaluate import evaluate

        cfg = _entry_config("evaluate", self.loaded.path, [f"split={split}", *overrides], self.root)
        _say_where("evaluate", cfg, Path(cfg.paths.output_dir))
        return evaluate(cfg)


def load_model(path: str | Path, overrides: Sequence[str] = (), root: str | Path | None = None) -> Model:
    """The checkpoint (or exported .safetensors) at `path`, ready to predict and evaluate;
    `root` places what evaluate writes and reads, as in `train`. Loading writes nothing."""
    from visionlab.app.runs import load_run

    loaded, combined = load_run(_entry_config("predict", path, overrides, root))
    return Model(loaded, combined, root)
