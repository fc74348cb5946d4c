"""What the evaluate, predict and export entry points share: find the run a checkpoint
came from, rebuild its net, and when asked its data, with command-line overrides on top.

Where things come from, first match wins: a group chosen whole on the command line
(`model=mlp`, `data=synthetic`); the checkpoint's own metadata (visionlab.training.checkpoint);
the run folder's `.hydra/config.yaml` beside `checkpoints/`. Partial overrides
(`data.eval_batch_size=500`) apply on top of the run's config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch
from hydra.utils import instantiate
from lightning import LightningDataModule
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from visionlab.app.config import ConfigError, validate
from visionlab.app.safety import check_values, resolved_data
from visionlab.data.datamodule import InMemoryImageDataModule
from visionlab.models.tta import tta_scores
from visionlab.training.checkpoint import METADATA_KEY, CheckpointError, LoadedModel, load_model, read_checkpoint


def checkpoint_path(cfg: DictConfig) -> Path:
    """`cfg.ckpt_path`, checked: required, and a file rather than a folder."""
    value = cfg.get("ckpt_path")
    if not value:
        raise ConfigError("ckpt_path is required, e.g. ckpt_path=outputs/runs/DATE/TIME/checkpoints/last.ckpt")
    path = Path(str(value))
    if path.is_dir():
        found = sorted(p.name for p in path.glob("**/*.ckpt"))
        raise ConfigError(
            f"ckpt_path={path} is a folder; give a checkpoint file"
            + (f" (found: {', '.join(found[:5])})" if found else "")
        )
    return path


TAKEN_FROM_RUN = ("data", "model", "seed")


def run_config(ckpt: Path) -> DictConfig | None:
    """The composed config saved by the run that wrote `ckpt`, if it is still beside it;
    read as data: the parts taken from it call no resolver but pure ones (their targets are
    checked, resolved, where something is built from them)."""
    for folder in (ckpt.parent.parent, ckpt.parent):
        saved = folder / ".hydra" / "config.yaml"
        if saved.is_file():
            try:
                config = OmegaConf.load(saved)
            except Exception as err:  # noqa: BLE001 - yaml and omegaconf raise many types
                raise ConfigError(f"{saved}: not a readable run config ({' '.join(str(err).split())[:120]})") from None
            if not isinstance(config, DictConfig):
                raise ConfigError(f"{saved}: not a run config (a mapping)")
            for key in TAKEN_FROM_RUN:  # the parts merged into the entry's config
                check_values(config.get(key), f"{saved}: {key}")
            return config
    return None


def _group(cfg: DictConfig, run: DictConfig | None, key: str) -> Any:
    """cfg.<key> if chosen whole (it has a _target_), else the run's with cfg's keys on top."""
    override = cfg.get(key)
    if override is not None and "_target_" in override:
        return OmegaConf.to_container(override)
    base = run.get(key) if run is not None else None
    if base is None:
        return OmegaConf.to_container(override) if override else None
    return OmegaConf.to_container(OmegaConf.merge(base, override or {}))


def combined_config(cfg: DictConfig, run: DictConfig | None, model: dict[str, Any] | None = None) -> DictConfig:
    """The entry config plus the `data`, `model` and `seed` the checkpoint was trained with;
    `model`, the checkpoint's own model config, is preferred to the run's."""
    if model:
        check_values(model, "the checkpoint's model config")
    merged = cast(dict[str, Any], OmegaConf.to_container(cfg))
    merged["data"] = _group(cfg, run, "data")
    merged["model"] = _group(cfg, OmegaConf.create({"model": model}) if model else run, "model")
    if merged.get("seed") is None:
        merged["seed"] = run.get("seed", 0) if run is not None else 0
    combined = OmegaConf.create(merged)
    validate(combined)
    return combined


def build_datamodule(cfg: DictConfig) -> InMemoryImageDataModule:
    """The data module of `cfg.data`, prepared and set up (data read into memory)."""
    if not cfg.get("data"):
        raise ConfigError(
            "no data config: no training run config beside the checkpoint names one; "
            "choose one, e.g. data=fashion_mnist"
        )
    # the data config may come from a run folder someone sent: only DataModule classes, built
    # from the resolved values that were checked
    data = resolved_data(cfg.data, "data", base=LightningDataModule)
    # evaluate and predict read whole splits: a streamed image folder is read into memory
    # here (the same tensors, tested), or refused in one line when it cannot fit
    if data.get("loader") in ("stream", "auto"):
        data["loader"] = "memory"
    datamodule = instantiate(data)
    datamodule.prepare_data()
    datamodule.setup()
    return datamodule


def load_run(cfg: DictConfig) -> tuple[LoadedModel, DictConfig]:
    """The trained net of `cfg.ckpt_path` and the combined config (see `combined_config`)."""
    path = checkpoint_path(cfg)
    checkpoint = read_checkpoint(path)
    meta = checkpoint[METADATA_KEY]
    combined = combined_config(cfg, run_config(path), meta.get("model"))
    fallback: dict[str, Any] = {}
    if not all(meta.get(k) for k in ("classes", "mean", "std", "input_shape")) and combined.get("data"):
        datamodule = build_datamodule(combined)  # a checkpoint without metadata: ask the data
        fallback.update(
            classes=list(datamodule.classes),
            input_shape=list(datamodule.input_shape),
            mean=list(datamodule.mean),
            std=list(datamodule.std),
        )
    model_config = cast(dict[str, Any], OmegaConf.to_container(combined.model)) if combined.get("model") else None
    return load_model(checkpoint, path, fallback, model_config), combined


def check_data_fits(model: LoadedModel, datamodule: InMemoryImageDataModule) -> None:
    """The data must have the classes and image shape the net was trained on."""
    if datamodule.num_classes != len(model.classes) or tuple(datamodule.input_shape) != model.input_shape:
        raise CheckpointError(
            f"ckpt_path={model.path}: the net takes {model.input_shape} images of {len(model.classes)} classes, "
            f"data {type(datamodule).__name__} has {tuple(datamodule.input_shape)} images of "
            f"{datamodule.num_classes} classes"
        )


def pick_device(name: str) -> torch.device:
    """`auto` (CUDA when available, else CPU), or a torch device string."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r} is not a device; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"device={name!r}: this machine has {torch.cuda.device_count()} CUDA device(s); "
            "expected auto, cpu or an existing cuda:N"
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r}: no CUDA device is available here; expected auto or cpu")
    return device


@torch.no_grad()
def batch_logits(model: LoadedModel, images: Tensor, batch_size: int, device: torch.device) -> list[Tensor]:
    """Class scores of uint8 images (N, C, H, W), one (batch, classes) tensor per batch of
    `batch_size`, on the CPU: the batches training's validation and test steps see. With the
    checkpoint's test-time augmentation (`model.tta`) applied, as its test step applied it."""
    net, transform = model.net.to(device).eval(), model.transform()
    return [tta_scores(net, transform(chunk.to(device)), model.tta).cpu() for chunk in images.split(batch_size)]


def probabilities(model: LoadedModel, images: Tensor, batch_size: int, device: torch.device) -> Tensor:
    """Class probabilities (N, classes) of uint8 images (N, C, H, W), on the CPU."""
    out = [logits.softmax(1) for logits in batch_logits(model, images, batch_size, device)]
    return torch.cat(out) if out else torch.empty(0, len(model.classes))


def top_k(probs: Tensor, classes: tuple[str, ...], k: int) -> list[list[tuple[str, float]]]:
    """Per row, the k most probable (class name, probability) pairs, best first."""
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    return [[(classes[i], float(p)) for p, i in zip(vs, ix)] for vs, ix in zip(values.tolist(), indices.tolist())]
