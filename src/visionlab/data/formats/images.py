"""Image files for prediction, turned into the uint8 (C, H, W) tensors the net was trained
on, read as the eye sees them (one reader for predict, serve and the Python API):

- EXIF orientation is applied (a phone photo taken sideways is upright);
- 16-bit images are scaled from 0-65535, so an 8-bit image saved as 16-bit reads the same;
  32-bit integer images holding 0-255 or 0-65535 likewise; float images hold 0-1 (or 0-255);
  other ranges are refused rather than clipped;
- transparency is composited on the background of the training data (`background_of`:
  black for dark data such as Fashion-MNIST's light objects on black, white otherwise);
- then converted to grayscale or RGB and resized to the net's H x W.

Bad files raise ImageError, which names the file, so a caller can report it and go on."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from visionlab.utils.errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
MODES = {1: "L", 3: "RGB"}
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class ImageError(ConfigError):
    """An input that cannot be used as an image; the message starts with its name."""


def background_of(mean: Sequence[float]) -> int:
    """The grey level transparency is composited on: 0 (black) when the training images are
    dark on average (normalisation mean < 0.5, e.g. Fashion-MNIST 0.29), else 255 (white)."""
    return 0 if sum(mean) / max(len(mean), 1) < 0.5 else 255


def list_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given (whatever their suffix, so a wrong file gets reported rather than
    ignored) and the image files inside folders, recursively, in sorted order."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            paths.append(path)
        else:
            raise FileNotFoundError(f"inputs: {path} is neither a file nor a folder")
    return paths


def read_image(path: str | Path | BinaryIO, input_shape: Sequence[int], max_pixels: int, *, background: int) -> Tensor:
    """uint8 (C, H, W) of `input_shape`, read by the rules above.

    The header is read first, so an image over `max_pixels` (a decompression bomb, or just
    too large) is refused before it is decoded.
    """
    try:
        with Image.open(path) as image:
            if image.width * image.height > max_pixels:
                raise ImageError(
                    f"{path}: too large to decode safely ({image.width}x{image.height} pixels, "
                    f"limit predict.max_pixels={max_pixels})"
                )
            return image_to_tensor(image, input_shape, background=background, name=str(path))
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"{path}: too large to decode safely (PIL's decompression-bomb limit)") from None
    except (OSError, SyntaxError, ValueError) as err:
        reason = "not an image" if isinstance(err, Image.UnidentifiedImageError) else f"unreadable image ({err})"
        raise ImageError(f"{path}: {reason}") from None


def image_to_tensor(image: Image.Image, input_shape: Sequence[int], *, background: int, name: str = "image") -> Tensor:
    """uint8 (C, H, W) of `input_shape` from a PIL image, by the rules above."""
    channels, height, width = input_shape
    if channels not in MODES:
        raise ConfigError(f"input_shape={tuple(input_shape)}: images need 1 or 3 channels")
    image = flatten_alpha(to_8bit(ImageOps.exif_transpose(image), name), background)
    image = image.convert(MODES[channels])
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    tensor = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
    return tensor.unsqueeze(0) if channels == 1 else tensor.permute(2, 0, 1).contiguous()


def to_8bit(image: Image.Image, name: str) -> Image.Image:
    """Single-channel 16-bit, 32-bit integer and float images as 8-bit "L", scaled by their
    range; PIL's own conversion would clip them at 255. Other modes are left to PIL."""
    if not image.mode.startswith(("I", "F")):
        return image
    pixels = np.asarray(image)
    return Image.fromarray(to_uint8(pixels, name, sixteen_bit=image.mode.startswith("I;16"), float_255=True))


def to_uint8(pixels: np.ndarray, name: str, *, sixteen_bit: bool = False, float_255: bool = False) -> np.ndarray:
    """uint8 pixels of an array: uint8 as is; 16-bit (`sixteen_bit` or a uint16 dtype) from
    0-65535; other integers holding 0-255 as is, 0-65535 as 16-bit; floats from 0-1 (and
    0-255 if `float_255`: float image files). Anything else is refused in one line."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype.kind not in "biuf":
        raise ImageError(f"{name}: pixels of type {pixels.dtype}; expected uint8 0-255, 16-bit or float 0-1")
    if pixels.dtype == np.bool_:
        return pixels.astype(np.uint8) * 255
    if pixels.size == 0:
        return pixels.astype(np.uint8)
    low, high = float(pixels.min()), float(pixels.max())
    if np.issubdtype(pixels.dtype, np.integer):
        if sixteen_bit or pixels.dtype == np.uint16 or (high > 255 and low >= 0 and high <= 65535):
            return np.round(pixels.astype(np.float64) / 257).astype(np.uint8)
        if low >= 0 and high <= 255:
            return pixels.astype(np.uint8)
        raise ImageError(f"{name}: integer pixels from {low:g} to {high:g}; expected 0-255 (8-bit) or 0-65535 (16-bit)")
    if not np.isfinite(pixels).all():
        raise ImageError(f"{name}: float pixels include NaN or infinity; expected values in 0-1")
    if low >= 0 and high <= 1:
        return np.round(pixels.astype(np.float64) * 255).astype(np.uint8)
    if float_255 and low >= 0 and high <= 255:
        return np.round(pixels).astype(np.uint8)
    raise ImageError(f"{name}: float pixels from {low:g} to {high:g}; expected 0-1 (or uint8 0-255)")


def flatten_alpha(image: Image.Image, background: int) -> Image.Image:
    """The image composited on a `background` grey, when it has transparency."""
    has_alpha = image.mode in ALPHA_MODES or "transparency" in image.info
    if not has_alpha:
        return image
    rgba = image.convert("RGBA")
    base = Image.new("RGBA", rgba.size, (background, background, background, 255))
    return Image.alpha_composite(base, rgba).convert("RGB")
