"""Image files for prediction, turned into the uint8 (C, H, W) tensors the net was trained
on: same channel count (grayscale or RGB) and size. Bad files raise ImageError, which
names the file, so a caller can report it and go on with the others."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from visionlab.utils.errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
MODES = {1: "L", 3: "RGB"}


class ImageError(ConfigError):
    """A file that cannot be used as an input image; the message starts with its path."""


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


def read_image(path: str | Path | BinaryIO, input_shape: Sequence[int], max_pixels: int) -> Tensor:
    """uint8 (C, H, W) of `input_shape`: converted to grayscale or RGB, resized to H x W.

    The header is read first, so an image over `max_pixels` (a decompression bomb, or just
    too large) is refused before it is decoded.
    """
    channels, height, width = input_shape
    if channels not in MODES:
        raise ConfigError(f"input_shape={tuple(input_shape)}: images need 1 or 3 channels")
    try:
        with Image.open(path) as image:
            if image.width * image.height > max_pixels:
                raise ImageError(f"{path}: too large to decode safely ({image.width}x{image.height} pixels, "
                                 f"limit predict.max_pixels={max_pixels})")
            return image_to_tensor(image, input_shape)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"{path}: too large to decode safely (PIL's decompression-bomb limit)") from None
    except (OSError, SyntaxError, ValueError) as err:
        reason = "not an image" if isinstance(err, Image.UnidentifiedImageError) else f"unreadable image ({err})"
        raise ImageError(f"{path}: {reason}") from None


def image_to_tensor(image: Image.Image, input_shape: Sequence[int]) -> Tensor:
    """uint8 (C, H, W) of `input_shape` from a PIL image: grayscale or RGB, resized to H x W."""
    channels, height, width = input_shape
    image = image.convert(MODES[channels])
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    tensor = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
    return tensor.unsqueeze(0) if channels == 1 else tensor.permute(2, 0, 1).contiguous()
