"""Export entry point, the notes' deployment step: the trained net as ONNX, TorchScript or
a safetensors state dict, next to a JSON that tells a consumer everything else (class
names, input shape, normalisation), so it needs nothing from visionlab. Each export is
checked against the PyTorch net on the same batches, at two batch sizes (the batch
dimension is dynamic), before it replaces anything on disk.
`python scripts/export.py ckpt_path=PATH format=onnx` (see conf/export.yaml)."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from visionlab.app.cli import hydra_entry
from visionlab.app.config import ConfigError
from visionlab.app.runs import load_run
from visionlab.training.checkpoint import METADATA_KEY, LoadedModel, build_net
from visionlab.utils.checks import Check, integer
from visionlab.utils.extras import needs
from visionlab.utils.io import atomic_path, atomic_write

log = logging.getLogger("visionlab")
CHECK_BATCHES = (1, 5)  # two sizes: a fixed batch dimension would fail one of them


class ExportCheckError(ValueError):
    """An exported model that does not compute what the PyTorch net computes."""


def check_batches(model: LoadedModel, seed: int = 0) -> list[Tensor]:
    """Normalised random images, as the exported model will receive them."""
    gen = torch.Generator().manual_seed(seed)
    transform = model.transform()
    return [
        transform(torch.randint(0, 256, (n, *model.input_shape), generator=gen, dtype=torch.uint8))
        for n in CHECK_BATCHES
    ]


def compare(run: Callable[[Tensor], Tensor], model: LoadedModel, tolerance: float, what: str) -> float:
    """Largest |exported - PyTorch| over the check batches; raises above `tolerance`."""
    worst = 0.0
    with torch.no_grad():
        for x in check_batches(model):
            worst = max(worst, float((run(x) - model.net(x)).abs().max()))
    if not worst <= tolerance:
        raise ExportCheckError(f"{what} output differs from PyTorch by {worst:.3g} > check.tolerance={tolerance:g}")
    return worst


def export_onnx(model: LoadedModel, path: Path, tolerance: float) -> float:
    import onnxruntime as ort

    example = check_batches(model)[-1]
    torch.onnx.export(
        model.net,
        (example,),
        str(path),
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        dynamo=True,
        external_data=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return compare(
        lambda x: torch.from_numpy(session.run(None, {"images": x.numpy()})[0]), model, tolerance, "ONNX (onnxruntime)"
    )


def export_torchscript(model: LoadedModel, path: Path, tolerance: float) -> float:
    """Traced TorchScript. torch marks torch.jit deprecated, but C++ (libtorch) consumers
    still load these files, so it stays, with its FutureWarnings silenced."""
    example = check_batches(model)[-1]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.trace(model.net, example), str(path))
        loaded = torch.jit.load(str(path))
    return compare(loaded, model, tolerance, "TorchScript")


def export_state_dict(model: LoadedModel, path: Path, tolerance: float) -> float:
    from safetensors.torch import load_file, save_file

    state = {k: v.detach().contiguous() for k, v in model.net.state_dict().items()}
    save_file(state, str(path), metadata={METADATA_KEY: json.dumps(model.describe())})
    net = build_net(model.model_config, model.input_shape, len(model.classes))
    net.load_state_dict(load_file(str(path)))
    return compare(net.eval(), model, tolerance, "safetensors state dict")


FORMATS: dict[str, tuple[str, Callable[[LoadedModel, Path, float], float]]] = {
    "onnx": (".onnx", export_onnx),
    "torchscript": (".pt", export_torchscript),
    "state_dict": (".safetensors", export_state_dict),
}


def consumer_info(model: LoadedModel, fmt: str, file_name: str) -> dict[str, Any]:
    """The JSON written next to the model: all a consumer needs to feed it and read it."""
    return {
        "format": fmt,
        "file": file_name,
        "classes": list(model.classes),
        "input": {"name": "images", "shape": ["batch", *model.input_shape], "dtype": "float32", "layout": "NCHW"},
        "output": {
            "name": "logits",
            "shape": ["batch", len(model.classes)],
            "note": "class scores; softmax gives probabilities",
        },
        "normalization": {
            "mean": list(model.mean),
            "std": list(model.std),
            "formula": "x = (pixel / 255 - mean[c]) / std[c], pixels uint8 in [0, 255]",
        },
        "model": model.model_config,
        "tta": model.tta,  # flip: average the probabilities of the image and its mirror (the file holds the net alone)
        "source_checkpoint": str(model.path),
    }


def export(cfg: DictConfig) -> Path:
    """Write `<name><suffix>` and `<name>.json` into the output folder; returns the model path."""
    fmt = cfg.get("format")
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r} is not allowed; expected one of {', '.join(FORMATS)}")
    tolerance = float(cfg.check.tolerance)
    model, combined = load_run(cfg)
    model.net.cpu().eval()
    suffix, write = FORMATS[fmt]
    target = Path(combined.paths.output_dir) / f"{cfg.name}{suffix}"
    try:
        with atomic_path(target) as tmp:
            worst = write(model, tmp, tolerance)
        atomic_write(target.with_suffix(".json"), json.dumps(consumer_info(model, fmt, target.name), indent=2))
    except OSError as err:
        raise ConfigError(
            f"paths.output_dir={target.parent}: cannot write the export there "
            f"({err.strerror or type(err).__name__}); choose a writable folder"
        ) from None
    print(
        f"Exported {fmt}: {target} (+ {target.with_suffix('.json').name}); max |export - PyTorch| = "
        f"{worst:.2e} on batches of {' and '.join(map(str, CHECK_BATCHES))}"
    )
    return target


def is_file_name(value: Any) -> bool:
    """A plain file name: no folder part, nothing hidden, no way out of the export folder."""
    return (
        isinstance(value, str)
        and value not in ("", ".", "..")
        and not value.startswith(".")
        and "/" not in value
        and "\\" not in value
        and "\0" not in value
    )


# export.yaml's own; the checkpoint's data and model check theirs
CHECKS = (
    integer("seed", 0),
    needs("format", "export", ("onnx", "onnxscript", "onnxruntime"), lambda v: v == "onnx"),
    Check("name", is_file_name, "a file name without a folder (letters, digits, -, _), e.g. name=fmnist_cnn"),
)
main = hydra_entry("export", export, checks=CHECKS)

if __name__ == "__main__":
    main()
