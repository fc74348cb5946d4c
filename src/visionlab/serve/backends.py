"""The two backends a server can run: the PyTorch net of a checkpoint, or an ONNX file made
by scripts/export.py (read with ONNX Runtime, its JSON sidecar giving class names, input
shape and normalisation). Both take uint8 images and apply the training normalisation, so
the same image gets the same answer from either."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from visionlab.app.config import ConfigError
from visionlab.data.transforms import BatchTransform
from visionlab.utils.extras import need

BACKENDS = ("pytorch", "onnx")


class Backend(Protocol):
    name: str
    kind: str
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]  # the training normalisation's (transparency's background follows it)

    def probabilities(self, images: Tensor) -> Tensor:
        """Class probabilities (N, classes) of uint8 images (N, C, H, W)."""


class TorchBackend:
    """A checkpoint's net, loaded as evaluate and predict load it."""

    kind = "pytorch"

    def __init__(self, cfg: DictConfig, device: str = "cpu") -> None:
        from visionlab.app.runs import load_run, pick_device

        self.model, _ = load_run(cfg)
        self.device = pick_device(device)
        self.model.net.to(self.device).eval()
        self.classes, self.input_shape, self.mean = self.model.classes, self.model.input_shape, self.model.mean
        self.name = cfg.get("name") or f"{type(self.model.net).__name__} {Path(self.model.path).name}"

    def probabilities(self, images: Tensor) -> Tensor:
        from visionlab.app.runs import probabilities

        return probabilities(self.model, images, max(len(images), 1), self.device)


class OnnxBackend:
    """An exported .onnx file run by ONNX Runtime on the CPU, fed as its JSON sidecar says."""

    kind = "onnx"

    def __init__(self, path: str | Path, name: str | None = None) -> None:
        ort = need("onnxruntime", "export", "model_path=X.onnx (ONNX Runtime)")

        path = Path(path)
        info = read_sidecar(path)
        self.classes = tuple(info["classes"])
        self.input_shape = tuple(int(s) for s in info["input"]["shape"][1:])
        self.input_name = info["input"]["name"]
        self.mean = tuple(float(m) for m in info["normalization"]["mean"])
        self.transform = BatchTransform(self.mean, info["normalization"]["std"])
        self.tta = info.get("tta") or "none"  # the checkpoint's test-time augmentation (visionlab.models.tta)
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            raise ConfigError(f"model_path={path}: cannot load: {str(err).splitlines()[0][:160]}") from None
        self.check_sidecar(path)
        target = str((info.get("model") or {}).get("_target_", "model")).rpartition(".")[2]
        self.name = name or f"{target} {path.name}"

    def check_sidecar(self, path: Path) -> None:
        """Refuse a sidecar that disagrees with the model (input name or shape, class count):
        one call on a blank image at start-up, instead of failing every request later."""
        names = [i.name for i in self.session.get_inputs()]
        if names != [self.input_name]:
            problem = f"input {self.input_name!r}, the model takes {', '.join(map(repr, names))}"
        else:
            blank = torch.zeros((1, *self.input_shape), dtype=torch.uint8)
            try:
                shape = tuple(self.probabilities(blank).shape)
                problem = (
                    ""
                    if shape == (1, len(self.classes))
                    else (f"{len(self.classes)} classes, the model gives {shape[-1] if shape else 'no'} scores")
                )
            except Exception as err:  # noqa: BLE001 - onnxruntime raises its own untyped errors
                problem = (
                    f"input shape {list(self.input_shape)}, the model refuses it ({str(err).splitlines()[0][:120]})"
                )
        if problem:
            raise ConfigError(
                f"model_path={path}: {path.with_suffix('.json').name} does not fit the model: it says "
                f"{problem} (re-export with scripts/export.py)"
            )

    def probabilities(self, images: Tensor) -> Tensor:
        x = self.transform(images)
        probs = self._run(x)
        return (probs + self._run(x.flip(-1))) / 2 if self.tta == "flip" else probs

    def _run(self, x: Tensor) -> Tensor:
        logits = self.session.run(None, {self.input_name: x.contiguous().numpy()})[0]
        return torch.from_numpy(logits).softmax(1)


def read_sidecar(path: Path) -> dict[str, Any]:
    """The JSON scripts/export.py writes beside X.onnx, checked for what serving needs."""
    if path.suffix != ".onnx" or not path.is_file():
        raise ConfigError(f"model_path={path}: expected an .onnx file written by scripts/export.py")
    sidecar = path.with_suffix(".json")
    try:
        info = json.loads(sidecar.read_text())
        ok = (
            isinstance(info["classes"], list)
            and len(info["input"]["shape"]) == 4
            and len(info["normalization"]["mean"]) == len(info["normalization"]["std"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise ConfigError(
            f"model_path={path}: {sidecar.name} beside it is missing or lacks classes, "
            "input.shape and normalization (re-export with scripts/export.py)"
        )
    return info


@dataclass(frozen=True)
class BackendSource:
    """What an inference worker needs to load the backend again in its own process: small
    and picklable (workers are spawned, models are not sent over)."""

    kind: str
    config: dict[str, Any]

    @classmethod
    def from_config(cls, cfg: DictConfig) -> BackendSource:
        ckpt, onnx = cfg.get("ckpt_path"), cfg.get("model_path")
        if bool(ckpt) == bool(onnx):
            raise ConfigError("give either ckpt_path=RUN/checkpoints/X.ckpt or model_path=X.onnx (an export), not both")
        resolved = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
        resolved.pop("hydra", None)
        return cls("pytorch" if ckpt else "onnx", resolved)

    def load(self, device: str = "cpu") -> Backend:
        if self.kind == "onnx":
            return OnnxBackend(self.config["model_path"], self.config.get("name"))
        return TorchBackend(OmegaConf.create(self.config), device)
