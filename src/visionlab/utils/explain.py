"""Where the net looks: Grad-CAM heat maps (captum's LayerGradCam) over the input image for
a class, or, for nets without a conv layer (the MLP), a saliency map (captum's Saliency:
the input gradient's magnitude).

The Grad-CAM layer is found automatically: the last Conv2d whose output still has more
than one pixel (a ResNet's last conv on a 32x32 input is 1x1, whose map says nothing), or
it is named (`explain_layer=features.4`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor, nn

from visionlab.utils.errors import ConfigError
from visionlab.utils.extras import need
from visionlab.utils.figures import DPI, save_png
from visionlab.utils.probe import forward_probe

METHODS = ("gradcam", "saliency")
log = logging.getLogger("visionlab")


def conv_output_sizes(net: nn.Module, x: Tensor) -> dict[str, tuple[int, ...]]:
    """Output shape (without batch) of every Conv2d of `net` on input `x`, in call order."""
    sizes: dict[str, tuple[int, ...]] = {}
    names = {module: name for name, module in net.named_modules()}

    def record(module: nn.Module, out: Tensor) -> None:
        sizes.setdefault(names[module], tuple(out.shape[1:]))

    forward_probe(net, x[:1], [m for m in names if isinstance(m, nn.Conv2d)], record)
    return sizes


def find_layer(net: nn.Module, x: Tensor, name: str | None = None) -> tuple[str, nn.Module] | None:
    """The Grad-CAM layer: `name` when given (refused in one line if `net` has no such
    layer), else the last Conv2d with a spatial output (> 1 pixel); None when `net` has no
    Conv2d (use a saliency map)."""
    sizes = conv_output_sizes(net, x)
    if name:
        modules = dict(net.named_modules())
        if name not in modules:
            hint = f"its conv layers: {', '.join(sizes)}" if sizes else "it has no conv layer (use explain=saliency)"
            raise ConfigError(f"explain_layer={name!r} is not a layer of {type(net).__name__}; {hint}")
        return name, modules[name]
    spatial = [n for n, shape in sizes.items() if len(shape) == 3 and shape[1] * shape[2] > 1]
    chosen = spatial[-1] if spatial else next(reversed(sizes), None)
    return (chosen, net.get_submodule(chosen)) if chosen else None


def _unit(maps: Tensor) -> Tensor:
    """Each map scaled to [0, 1] by its own maximum (all-zero maps stay zero)."""
    peak = maps.flatten(1).amax(1).clamp_min(1e-12)
    return maps / peak[:, None, None]


def heat_maps(net: nn.Module, x: Tensor, targets: Tensor, layer: nn.Module | None) -> Tensor:
    """(N, H, W) non-negative maps in [0, 1] of how much each pixel of `x` (the net's
    normalised input, N x C x H x W) supports class `targets`: Grad-CAM on `layer`, upsampled
    to the input's size, or the saliency map when `layer` is None."""
    attr = need("captum.attr", "explain", "explain=gradcam|saliency")
    net = net.eval()
    x = x.detach().clone().requires_grad_(True)  # a graph even when every weight is frozen
    targets = targets.to(x.device)
    if layer is None:
        maps = attr.Saliency(net).attribute(x, target=targets, abs=True).amax(1)
    else:
        cam = attr.LayerGradCam(net, layer).attribute(x, target=targets, relu_attributions=True)
        if cam.ndim != 4:
            raise ConfigError(
                f"explain_layer: {type(layer).__name__} gives no spatial map "
                f"(output {tuple(cam.shape)}); choose a conv layer"
            )
        maps = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0].clamp_min(0)
    return _unit(maps.detach().float().cpu())


def overlay_figure(image: Tensor, maps: Sequence[Tensor], titles: Sequence[str], method: str) -> Figure:
    """The image, then one panel per map: the image in gray with the map in colour over it."""
    panels = 1 + len(maps)
    fig = Figure(figsize=(2.2 * panels, 2.5), dpi=DPI)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    pixels = image.permute(1, 2, 0).numpy()
    gray = pixels[..., 0] if pixels.shape[2] == 1 else pixels.mean(2)
    axes[0].imshow(pixels[..., 0] if pixels.shape[2] == 1 else pixels, cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("input", fontsize=8)
    for ax, heat, title in zip(axes[1:], maps, titles):
        ax.imshow(gray, cmap="gray", vmin=0, vmax=255)
        ax.imshow(heat.numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(f"{method}: {title}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.86, wspace=0.08)
    return fig


def file_name(name: str, i: int) -> str:
    """A file name for input `name` (a path, or test[i]): its stem, prefixed by its position."""
    stem = Path(name).stem if not name.startswith("test[") else f"test_{name[5:-1]}"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
    return f"{i:04d}_{safe}.png"


def explain(
    net: nn.Module,
    images: Tensor,
    x: Tensor,
    names: Sequence[str],
    predicted: Tensor,
    classes: Sequence[str],
    out: Path,
    method: str = "gradcam",
    layer_name: str | None = None,
    true: Tensor | None = None,
    batch_size: int = 64,
) -> list[Path]:
    """Write one PNG per input into `out`: the uint8 image `images[i]` with the heat map for
    its predicted class (and its true class when `true` is given) over it; `x` is what the
    net takes (normalised `images`). Returns the files, in input order."""
    if method not in METHODS:
        raise ConfigError(f"explain={method!r} is not allowed; expected one of {', '.join(METHODS)}, or null")
    found = find_layer(net, x, layer_name) if method == "gradcam" else None
    layer = found[1] if found else None
    shown = "gradcam" if layer is not None else "saliency"
    log.info("explain: %s", f"Grad-CAM on layer {found[0]}" if found else "saliency map (no conv layer)")
    wanted = [predicted] + ([true] if true is not None else [])
    maps = [
        torch.cat([heat_maps(net, xb, tb, layer) for xb, tb in zip(x.split(batch_size), t.split(batch_size))])
        for t in wanted
    ]
    paths = []
    for i, name in enumerate(names):
        titles = [f"predicted {classes[int(predicted[i])]}"]
        if true is not None:
            titles.append(f"true {classes[int(true[i])]}")
        path = out / file_name(name, i)
        save_png(overlay_figure(images[i], [m[i] for m in maps], titles, shown), path)
        paths.append(path)
    return paths
