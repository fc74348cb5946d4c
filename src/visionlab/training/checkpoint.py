"""Checkpoints that describe themselves, loaded without running code from the file.

A training checkpoint carries, besides the weights, a small `visionlab` dict (class names,
input shape, normalisation, the model config) written by `ClassifierTask.on_save_checkpoint`.
The module hook runs for every checkpoint Lightning writes, weights-only ones included,
so a checkpoint copied away from its run folder still says how to rebuild and feed its
net. Files are read with `weights_only=True` (or as safetensors), and a net is rebuilt
only from classes in `visionlab.models`, so loading a file never runs code it names.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from visionlab.data.transforms import BatchTransform
from visionlab.models.tta import TTA_MODES
from visionlab.utils.errors import ConfigError
from visionlab.utils.targets import MODELS, NOT_ALLOWED, TargetError, resolve_target

METADATA_KEY = "visionlab"


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used; the message names the file and the reason."""


def checkpoint_metadata(
    model_config: Mapping[str, Any] | None, datamodule: Any, net: nn.Module, tta: str = "none"
) -> dict[str, Any]:
    """What a consumer needs besides the weights; plain types only, so `weights_only` loads it.
    `tta`, the task's test-time augmentation, is applied by whatever loads the file."""
    meta: dict[str, Any] = {"input_shape": list(getattr(net, "input_shape", ())), "tta": tta}
    if model_config:
        meta["model"] = dict(model_config)
    if datamodule is not None:
        meta["classes"] = list(getattr(datamodule, "classes", ()))
        if getattr(datamodule, "mean", ()):
            meta["mean"], meta["std"] = list(datamodule.mean), list(datamodule.std)
    return meta


def _first_line(err: BaseException) -> str:
    """The first sentence of an error message: torch's go on for paragraphs."""
    text = str(err).strip().splitlines()
    return text[0].split(". ")[0][:160] if text else type(err).__name__


def read_checkpoint(path: str | Path, map_location: Any = "cpu", weights_only: bool = True) -> dict[str, Any]:
    """The checkpoint dict at `path` (a Lightning .ckpt, a plain state dict, or .safetensors).

    Returns at least `state_dict` (tensors) and `visionlab` (metadata, maybe empty). The
    tensors go where `map_location` says (torch.load's argument). `weights_only=False`
    (Lightning's argument, the caller's explicit choice) unpickles anything the file holds.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={path}: no such file")
    if path.suffix == ".safetensors":
        return _read_safetensors(path, map_location)
    try:
        raw = torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as err:  # noqa: BLE001 - torch raises many types for bad files
        raise CheckpointError(f"ckpt_path={path}: {_why_unloadable(path, err)}") from None
    if isinstance(raw, Mapping) and isinstance(raw.get("state_dict"), Mapping):
        return {**raw, METADATA_KEY: dict(raw.get(METADATA_KEY) or {})}
    if isinstance(raw, Mapping) and raw and all(isinstance(v, Tensor) for v in raw.values()):
        return {"state_dict": dict(raw), METADATA_KEY: {}}
    raise CheckpointError(
        f"ckpt_path={path}: cannot load: a {type(raw).__name__} without a state_dict, not a checkpoint"
    )


def _why_unloadable(path: Path, err: BaseException) -> str:
    """Why torch.load refused `path`: a file that would run code is named as such, with the
    globals it holds (torch's own answer, not its message text); else empty, broken or foreign."""
    with path.open("rb") as f:
        head = f.read(4)
    if not head:
        return "cannot load: the file is empty"
    if head.startswith(b"PK"):  # torch.save's zip format: torch can list the globals without running them
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - a broken archive: said below
            unsafe = []
        if unsafe:
            return (
                f"refused: the file holds {', '.join(sorted(unsafe))}, which would run code when loaded; "
                "visionlab loads weights only"
            )
        return f"cannot load: truncated or corrupt archive ({_first_line(err)})"
    if head.startswith(b"\x80"):  # the legacy pickle format: torch cannot list its globals
        return (
            "cannot load: a legacy-format (pre-zip) torch.save file that is truncated or holds objects "
            "which would run code when loaded; visionlab loads weights only"
        )
    return "cannot load: not a PyTorch checkpoint"


def _read_safetensors(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        state = load_file(path)
        with safe_open(path, framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"ckpt_path={path}: cannot load: not a valid safetensors file ({_first_line(err)})"
        ) from None
    meta = json.loads(header.get(METADATA_KEY, "{}"))
    if isinstance(map_location, (str, torch.device)):  # torch.load's other forms (dicts, functions) map storages
        state = {k: v.to(map_location) for k, v in state.items()}
    return {"state_dict": state, METADATA_KEY: meta}


def training_progress(checkpoint: Mapping[str, Any]) -> tuple[int, int] | None:
    """(epochs completed, optimizer steps) of a checkpoint Lightning can resume a fit from,
    None for a weights-only file. Read from Lightning's checkpoint layout (the fit loop's
    epoch progress counts an epoch once it is processed; a mid-epoch checkpoint counts it
    not yet): the one place that knows it, tested against a real checkpoint."""
    loops, steps = checkpoint.get("loops"), checkpoint.get("global_step")
    if not isinstance(loops, Mapping) or "optimizer_states" not in checkpoint or not isinstance(steps, int):
        return None
    progress = loops.get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    return int(progress.get("processed", checkpoint.get("epoch", 0))), steps


def net_state(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """The net's own weights: `net.*` keys of a task checkpoint with the prefix dropped."""
    state = checkpoint["state_dict"]
    if any(k.startswith("net.") for k in state):
        return {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    return dict(state)


def build_net(model_config: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Instantiate `model_config` (Hydra style, `_target_` plus arguments), allowing only
    classes from visionlab.models: the config may come from a file someone sent."""
    config = dict(model_config)
    target = str(config.pop("_target_", ""))
    try:
        cls = resolve_target(target, MODELS)
    except TargetError as err:
        what = "is not allowed; expected a class in" if err.problem == NOT_ALLOWED else "is not a model class in"
        raise CheckpointError(f"model._target_={target!r} {what} {MODELS}") from None
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    return cls(input_shape=list(input_shape), num_classes=num_classes, **config)


def weight_mismatch(net: nn.Module, state: Mapping[str, Tensor]) -> str | None:
    """How `state` fails to fit `net` (missing, unexpected and mis-shaped keys), or None."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    parts = [
        f"{label} {len(keys)} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
        if keys
    ]
    return "; ".join(parts) or None


def load_weights(net: nn.Module, state: Mapping[str, Tensor], path: str | Path) -> None:
    """`net.load_state_dict(state)`, failing in one line that says how the two differ."""
    mismatch = weight_mismatch(net, state)
    if mismatch:
        raise CheckpointError(
            f"ckpt_path={path}: weights do not fit {type(net).__name__} (another architecture?): {mismatch}"
        )
    net.load_state_dict(state)


@dataclass
class LoadedModel:
    """A net with its trained weights and what feeding it needs."""

    net: nn.Module
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    model_config: dict[str, Any]
    path: Path
    tta: str = "none"  # visionlab.models.tta: applied by evaluate, predict, serve and the Python API

    def transform(self) -> BatchTransform:
        """uint8 (N, C, H, W) -> the normalised floats the net was trained on."""
        return BatchTransform(self.mean, self.std)

    def describe(self) -> dict[str, Any]:
        """The metadata dict, as stored in checkpoints and exported JSON."""
        return {
            "classes": list(self.classes),
            "input_shape": list(self.input_shape),
            "mean": list(self.mean),
            "std": list(self.std),
            "model": dict(self.model_config),
            "tta": self.tta,
        }


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_metadata(meta: Mapping[str, Any], path: str | Path) -> None:
    """Refuse metadata that would feed the net nonsense: class names that are not a list of
    strings (a string would be split into letters), a shape of non-positive sizes, and a
    normalisation that divides by 0 or holds NaN (every prediction NaN, reported as a class)."""
    classes, shape = meta["classes"], meta["input_shape"]
    problems = {
        "classes": (
            isinstance(classes, (list, tuple)) and all(isinstance(c, str) and c for c in classes),
            "a list of class names",
        ),
        "input_shape": (
            isinstance(shape, (list, tuple))
            and len(shape) == 3
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape),
            "three positive integers (channels, height, width)",
        ),
    }
    channels = shape[0] if problems["input_shape"][0] else None
    for key, low in (("mean", -math.inf), ("std", 0.0)):
        values = meta[key]
        ok = (
            isinstance(values, (list, tuple))
            and len(values) == channels
            and all(_finite(v) and v > low for v in values)
        )
        problems[key] = (ok, f"{channels} finite number(s){' > 0' if key == 'std' else ''}, one per channel")
    for key, (ok, expected) in problems.items():
        if not ok:
            raise CheckpointError(
                f"ckpt_path={path}: its metadata {key}={meta[key]!r} is not usable; expected {expected}"
            )


def load_model(
    checkpoint: Mapping[str, Any],
    path: str | Path,
    fallback: Mapping[str, Any] | None = None,
    model_config: Mapping[str, Any] | None = None,
) -> LoadedModel:
    """Rebuild the net of `checkpoint` (from `read_checkpoint`) in eval mode.

    Each field comes from the checkpoint's metadata, else from `fallback` (the same keys,
    e.g. read from the data); `model_config`, when given, replaces the stored model config.
    """
    meta = {**(fallback or {}), **checkpoint.get(METADATA_KEY, {})}
    if model_config:
        meta["model"] = dict(model_config)
    absent = [k for k in ("model", "classes", "input_shape", "mean", "std") if not meta.get(k)]
    if absent:
        raise CheckpointError(
            f"ckpt_path={path}: does not say its {', '.join(absent)}, and no run folder config supplies them"
        )
    check_metadata(meta, path)
    tta = meta.get("tta") or "none"
    if tta not in TTA_MODES:
        raise CheckpointError(
            f"ckpt_path={path}: its metadata tta={tta!r} is not usable; expected one of {', '.join(TTA_MODES)}"
        )
    classes, input_shape = tuple(meta["classes"]), tuple(int(s) for s in meta["input_shape"])
    try:
        net = build_net(meta["model"], input_shape, len(classes))
    except CheckpointError:  # a ValueError already worded for the user
        raise
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"ckpt_path={path}: cannot build model {meta['model'].get('_target_')}: {err}") from None
    state = net_state(checkpoint)
    damaged = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if damaged is not None:
        raise CheckpointError(
            f"ckpt_path={path}: weight {damaged} holds NaN or inf; the file is damaged or its training diverged"
        )
    load_weights(net, state, path)
    return LoadedModel(
        net.eval(), classes, input_shape, tuple(meta["mean"]), tuple(meta["std"]), dict(meta["model"]), Path(path), tta
    )
