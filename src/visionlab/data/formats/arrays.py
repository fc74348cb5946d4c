"""What people hold, as the uint8 (N, C, H, W) batch a net takes: numpy arrays and torch
tensors in any usual layout, PIL images, image paths, and lists mixing them.

Layout rules (`C` is 1, 3 or 4 channels; RGBA is composited as files are):

- 2-D is one HW image; 4-D is NCHW or NHWC; 3-D is one HWC or CHW image, or NHW images.
- A shape that fits several layouts is read, in turn, preferring the readings that give
  the net's own input (`input_shape`, C x H x W), then its H x W, then one image rather
  than a batch, then the net's channel count; still ambiguous, it is refused in one line
  that names the readings and the `layout=` argument that picks one. So on a 28x28
  grayscale net (3, 28, 28) is three images, and (40, 30, 3) or (3, 40, 30) one RGB image.
- A list holds single images (HW, HWC, CHW arrays or tensors, PIL images, paths).

Pixels: uint8 0-255, floats 0-1, 16-bit 0-65535 (visionlab.data.formats.images.to_uint8).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from visionlab.data.formats.images import ImageError, image_to_tensor, read_image, to_uint8

ImageLike = str | Path | Image.Image | np.ndarray | Tensor
CHANNELS = (1, 3, 4)
LAYOUTS = {2: ("HW",), 3: ("HWC", "CHW", "NHW"), 4: ("NCHW", "NHWC")}
SINGLE = ("HW", "HWC", "CHW")  # the layouts of one image, as a list item
ALL = "HW, HWC, CHW, NHW, NHWC or NCHW"


def as_batch(
    images: ImageLike | Sequence[ImageLike],
    input_shape: Sequence[int],
    *,
    background: int,
    max_pixels: int,
    layout: str | None = None,
) -> Tensor:
    """uint8 (N, C, H, W) of `input_shape` from one image or many, by the rules above."""
    shape = tuple(int(s) for s in input_shape)
    if isinstance(images, (np.ndarray, Tensor)):
        array = _numpy(images)
        batch = to_uint8(canonical(array, shape, layout, LAYOUTS.get(array.ndim, ()), "images"), "images")
        if batch.shape[1:] == shape:  # already what the net takes: nothing to convert
            return torch.from_numpy(np.ascontiguousarray(batch))
        return _stack([_from_pixels(chw, shape, background, f"images[{i}]") for i, chw in enumerate(batch)], shape)
    if isinstance(images, (str, Path, Image.Image)):
        items: list[Any] = [images]
    elif isinstance(images, Sequence):
        items = list(images)
    else:
        raise ImageError(f"images: a {type(images).__name__}; expected {_KINDS}")
    return _stack([_one(item, i, shape, background, max_pixels, layout) for i, item in enumerate(items)], shape)


_KINDS = "a path, a PIL image, a numpy array or torch tensor (uint8 0-255 or float 0-1), or a list of them"


def _stack(images: list[Tensor], shape: tuple[int, ...]) -> Tensor:
    return torch.stack(images) if images else torch.empty((0, *shape), dtype=torch.uint8)


def _one(item: Any, index: int, shape: tuple[int, ...], background: int, max_pixels: int, layout: str | None) -> Tensor:
    """One image of a list as uint8 (C, H, W) of `shape`."""
    name = f"images[{index}]"
    if isinstance(item, (str, Path)):
        if not Path(item).is_file():
            raise ImageError(f"{name}: {item} is not a file; a string is read as an image path")
        return read_image(item, shape, max_pixels, background=background)
    if isinstance(item, Image.Image):
        return image_to_tensor(item, shape, background=background, name=name)
    if isinstance(item, (np.ndarray, Tensor)):
        chw = canonical(_numpy(item), shape, layout, SINGLE, name)[0]
        return _from_pixels(to_uint8(chw, name), shape, background, name)
    raise ImageError(f"{name}: a {type(item).__name__}; expected {_KINDS}")


def _from_pixels(pixels: np.ndarray, shape: tuple[int, ...], background: int, name: str) -> Tensor:
    """uint8 (C, H, W) pixels, C of 1, 3 or 4, converted and resized as an image file is."""
    if pixels.shape[0] == 1:
        image = Image.fromarray(pixels[0], "L")
    else:
        image = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)), "RGB" if len(pixels) == 3 else "RGBA")
    return image_to_tensor(image, shape, background=background, name=name)


def _numpy(data: np.ndarray | Tensor) -> np.ndarray:
    """A tensor (on any device, any float type) as a numpy array; arrays as they are."""
    if isinstance(data, Tensor):
        data = data.detach()
        if data.is_floating_point() and data.dtype != torch.float64:
            data = data.float()
        return data.cpu().numpy()
    return data


def _reading(array: np.ndarray, layout: str) -> np.ndarray | None:
    """`array` as (N, C, H, W) read with `layout`, or None when it cannot be that."""
    if len(layout) != array.ndim:
        return None
    order = [layout.index(axis) for axis in "NCHW" if axis in layout]
    view = array.transpose(order)
    if "C" not in layout:
        view = view[:, None] if "N" in layout else view[None]
    if "N" not in layout:
        view = view[None]
    return view if view.shape[1] in CHANNELS else None


def _describe(layout: str, batch: np.ndarray) -> str:
    count, channels = batch.shape[:2]
    size = f"{batch.shape[2]}x{batch.shape[3]}"
    return f"{layout}: {count} image{'s' if count != 1 else ''} of {size} with {channels} channel{'s' if channels != 1 else ''}"


def canonical(
    array: np.ndarray, shape: tuple[int, ...], layout: str | None, allowed: Sequence[str], name: str
) -> np.ndarray:
    """`array` as (N, C, H, W) pixels (any dtype), by the layout rules of this module."""
    if layout is not None:
        if layout not in allowed:
            raise ImageError(
                f"layout={layout!r} does not fit {name} of shape {array.shape}; expected one of "
                f"{', '.join(allowed) or ALL}"
            )
        batch = _reading(array, layout)
        if batch is None:
            raise ImageError(f"{name}: shape {array.shape} cannot be {layout} (channels must be 1, 3 or 4)")
        return batch
    readings = {lay: b for lay in allowed if (b := _reading(array, lay)) is not None}
    if not readings:
        raise ImageError(
            f"{name}: shape {array.shape} is no image layout; expected {' or '.join(allowed) or ALL} "
            "with 1, 3 or 4 channels (C)"
        )
    chosen = _distinct(list(readings.items()))
    preferences = (
        lambda lay, b: b.shape[1:] == shape,
        lambda lay, b: b.shape[2:] == shape[1:],
        lambda lay, b: "N" not in lay,
        lambda lay, b: b.shape[1] == shape[0],
    )
    for prefer in preferences:
        if len(chosen) > 1 and (preferred := [(lay, b) for lay, b in chosen if prefer(lay, b)]):
            chosen = preferred
    if len(chosen) > 1:
        options = "; ".join(_describe(lay, b) for lay, b in chosen)
        raise ImageError(
            f"{name}: shape {array.shape} is ambiguous ({options}); say which with "
            f"layout={' or layout='.join(repr(lay) for lay, _ in chosen)}"
        )
    return chosen[0][1]


def _distinct(readings: list[tuple[str, np.ndarray]]) -> list[tuple[str, np.ndarray]]:
    """Readings that give different images (CHW with C=1 and NHW with N=1 are the same)."""
    out: list[tuple[str, np.ndarray]] = []
    for lay, batch in readings:
        if not any(b.shape == batch.shape and np.array_equal(b, batch) for _, b in out):
            out.append((lay, batch))
    return out
