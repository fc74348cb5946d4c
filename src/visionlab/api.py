"""The Python API for notebooks: the scripts' entry points, called with the same overrides.

    metrics = visionlab.train(["model=mlp", "trainer.max_epochs=1"])
    model = visionlab.load_model("outputs/runs/DATE/TIME/checkpoints/last.ckpt")
    model.predict("shoe.png")       # or arrays, tensors, PIL images, lists of them (Model.predict)
    model.evaluate("test")

Nothing here re-implements a script: `train` composes and checks the config once, as
`scripts/train.py` does (visionlab.app.cli.prepare_run), and runs the same
`visionlab.app.fit.train`; `Model` holds what evaluate and predict load and runs their functions.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from visionlab.app import fit
from visionlab.app.assemble import CHECKS
from visionlab.app.cli import _is_multirun, prepare_run
from visionlab.app.config import ConfigError, at_folder, override
from visionlab.data.formats.arrays import ImageLike, as_batch
from visionlab.data.formats.images import background_of
from visionlab.training.checkpoint import LoadedModel
from visionlab.utils.io import atomic_write
from visionlab.utils.quiet import quiet_known_noise

MAX_PIXELS = 25_000_000  # as predict.max_pixels


def data_cache() -> Path:
    """Where the API keeps data sets unless $VISIONLAB_ROOT or `paths.data_dir=` says
    otherwise: the user's cache folder ($XDG_CACHE_HOME, else ~/.cache)/visionlab/data."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "visionlab" / "data"


def _placed(overrides: Sequence[str], root: str | Path | None) -> list[str]:
    """`overrides` after the API's own placement: runs under `root`/outputs (else
    $VISIONLAB_ROOT/outputs, else ./outputs, as the commands), data in $VISIONLAB_ROOT/data
    or else `data_cache()`, not in whatever folder a notebook runs in. Overrides win."""
    placed = [] if root is None else [override("paths.root_dir", Path(root).expanduser().resolve())]
    if not os.environ.get("VISIONLAB_ROOT"):
        placed.append(override("paths.data_dir", data_cache()))
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
    quiet_known_noise()
    if _is_multirun(overrides):
        raise ConfigError(
            "visionlab.train runs one job; sweeps (-m) run from the command line: scripts/train.py -m ..."
        )
    argv, lock, composed = prepare_run("train", _placed(overrides, root), CHECKS, resumes=True, locks=True)
    try:
        if composed is None:  # hparams_search=... makes a sweep
            raise ConfigError("visionlab.train runs one job; sweeps run from the command line: scripts/train.py ...")
        run_dir = Path(str(composed.hydra.run.dir))  # pinned by prepare_run's lock
        cfg = at_folder(composed, run_dir)
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
            return fit.train(cfg)
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
    _, _, cfg = prepare_run(name, _placed([override("ckpt_path", ckpt), *overrides], root), entry.CHECKS)
    if cfg is None:
        raise ConfigError(f"visionlab.{name} runs one job; sweeps run from the command line")
    return at_folder(cfg, str(cfg.hydra.run.dir))


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

    def images(self, images: ImageLike | Sequence[ImageLike], layout: str | None = None) -> Tensor:
        """The uint8 (N, C, H, W) batch the net is fed for `images`; see `predict`."""
        return as_batch(
            images,
            self.loaded.input_shape,
            background=background_of(self.loaded.mean),
            max_pixels=MAX_PIXELS,
            layout=layout,
        )

    def probabilities(
        self, images: ImageLike | Sequence[ImageLike], batch_size: int = 256, layout: str | None = None
    ) -> Tensor:
        """(N, classes) probabilities of the images, preprocessed exactly as in training, run
        on the device the net is on (the CPU as loaded; `model.net.cuda()` for a GPU), returned
        on the CPU."""
        from visionlab.app.runs import probabilities

        device = next(self.net.parameters()).device
        return probabilities(self.loaded, self.images(images, layout), batch_size, device)

    def predict(
        self, images: ImageLike | Sequence[ImageLike], top_k: int = 3, layout: str | None = None
    ) -> list[dict[str, Any]]:
        """Per image: the most probable class, its probability and the top-k (class, p) pairs.

        `images` is one image or a batch: a path, a PIL image, a numpy array or torch tensor
        (CPU or GPU; uint8 0-255, float 0-1 or 16-bit) laid out HW, HWC, CHW, NHW, NHWC or
        NCHW (N = 0 included), or a list mixing them (each one image). A shape that fits
        several layouts is read preferring the net's input (C, H, W), then its H x W, then
        one image over a batch, then the net's channel count; if still ambiguous it is
        refused, and `layout="CHW"` (etc.) says which.
        Pixels are read as image files are (visionlab.data.formats.images).
        """
        from visionlab.app.runs import top_k as best_of

        if not (isinstance(top_k, int) and not isinstance(top_k, bool) and top_k >= 1):
            raise ConfigError(f"top_k={top_k!r} is not allowed; expected an integer >= 1")
        probs = self.probabilities(images, layout=layout)
        return [
            {"class": top[0][0], "probability": top[0][1], "top": top} for top in best_of(probs, self.classes, top_k)
        ]

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

    quiet_known_noise()
    loaded, combined = load_run(_entry_config("predict", path, overrides, root))
    return Model(loaded, combined, root)
