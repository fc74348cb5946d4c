"""An HTTP request to POST /predict turned into the uint8 image the model takes, checked in
the HTTP server before anything reaches the model queue: a bad request gets a 4xx with a
one-line reason and never costs a batch. The image is read exactly as predict.py reads
files (visionlab.data.formats.images.read_image: the header first, so a decompression bomb is
refused before decoding; then channel conversion and resize)."""

from __future__ import annotations

import base64
import binascii
import io
import json
import warnings
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, HTTPException, Request
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from visionlab.data.formats.images import ImageError, read_image

FILE_FIELDS = ("image", "file")  # multipart field names taken as the image
JSON_TYPE, MULTIPART_TYPE = "application/json", "multipart/form-data"
TRUE = ("1", "true", "yes", "on")

# read_image refuses images over max_pixels itself; PIL's own warning would only add noise.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def reject(status: int, reason: str) -> HTTPException:
    """The error a client gets: `{"detail": reason}` with `status`, reason on one line."""
    return HTTPException(status_code=status, detail=" ".join(reason.split()))


class NamedBytes(io.BytesIO):
    """Upload bytes that print as their file name, so read_image's messages name the upload."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.label = name

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class Limits:
    """What a request is checked against: the model's input shape and the serve.* limits."""

    input_shape: tuple[int, ...]
    max_upload_bytes: int
    max_pixels: int
    background: int  # transparency's background grey (visionlab.data.formats.images.background_of)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise reject(
            413, f"upload of {int(declared)} bytes is over the limit of {limit} bytes (serve.max_upload_bytes)"
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise reject(413, f"upload is over the limit of {limit} bytes (serve.max_upload_bytes)")
    return bytes(body)


async def _once(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body


async def from_multipart(request: Request, body: bytes, limit: int) -> tuple[bytes, str, dict[str, Any]]:
    """The uploaded file of a multipart form (field `image` or `file`) and the other fields."""
    parser = MultiPartParser(request.headers, _once(body), max_files=4, max_fields=16, max_part_size=limit)
    try:
        form = await parser.parse()
    except MultiPartException as err:
        raise reject(400, f"malformed multipart form: {err.message}") from None
    try:
        upload = next((v for f in FILE_FIELDS if isinstance(v := form.get(f), UploadFile)), None)
        if upload is None:
            raise reject(400, "multipart form has no file field named image")
        data = await upload.read()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        return data, upload.filename or "upload", fields
    finally:
        await form.close()


def from_json(body: bytes) -> tuple[bytes, str, dict[str, Any]]:
    """The image of `{"image": "<base64, or a data: URL>"}` and the other keys."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise reject(400, f"malformed JSON: {err}") from None
    except RecursionError:  # json's C parser recurses once per level of nesting
        raise reject(400, 'malformed JSON: nested too deeply; send an object {"image": "<base64>"}') from None
    if not isinstance(payload, dict) or not isinstance(payload.get("image"), str):
        raise reject(400, 'JSON body must be an object {"image": "<base64 PNG or JPEG>"}')
    text = payload["image"]
    if text.startswith("data:"):  # what a browser's FileReader.readAsDataURL gives
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise reject(400, "image: not valid base64") from None
    return data, "image", payload


def decode(data: bytes, name: str, limits: Limits) -> np.ndarray:
    """uint8 (C, H, W) as predict.py reads a file; ImageError becomes a 400 or 413."""
    if not data:
        raise reject(400, f"{name}: empty upload (0 bytes)")
    try:
        return read_image(
            NamedBytes(data, name), limits.input_shape, limits.max_pixels, background=limits.background
        ).numpy()
    except ImageError as err:  # read_image words its refusals for predict.py's options
        reason = str(err).replace("predict.max_pixels", "serve.max_pixels")
        raise reject(413 if "too large to decode" in reason else 400, reason) from None


def wants(fields: dict[str, Any], key: str) -> bool:
    """Whether a form field, JSON key or query parameter `key` says yes."""
    value = fields.get(key, False)
    return value is True or str(value).lower() in TRUE


async def parse_upload(request: Request, limits: Limits) -> dict[str, Any]:
    """The payload an inference worker gets: `pixels` (uint8 C, H, W) and `preview`
    (send back the image as the model sees it, as a PNG)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in (JSON_TYPE, MULTIPART_TYPE):
        raise reject(
            415,
            f"content type {content_type or '(none)'!r} is not accepted; send "
            f'{MULTIPART_TYPE} (field image) or {JSON_TYPE} {{"image": base64}}',
        )
    body = await read_body(request, limits.max_upload_bytes)
    if content_type == JSON_TYPE:
        data, name, fields = from_json(body)
    else:
        data, name, fields = await from_multipart(request, body, limits.max_upload_bytes)
    pixels = await run_in_threadpool(decode, data, name, limits)
    preview = wants(fields, "preview") or wants(dict(request.query_params), "preview")
    return {"pixels": pixels, "preview": preview}


def png_base64(pixels: np.ndarray) -> str:
    """A uint8 (C, H, W) image as base64 PNG: what the page shows as the model's input."""
    array = pixels[0] if pixels.shape[0] == 1 else np.transpose(pixels, (1, 2, 0))
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


async def upload_payload(request: Request) -> dict[str, Any]:
    """FastAPI dependency of POST /predict, with the limits the server put in app.state."""
    return await parse_upload(request, request.app.state.upload_limits)


# The request type of ClassifierAPI.decode_request: LitServe hands FastAPI's result of this
# dependency to the workers, instead of parsing the body itself.
Upload = Annotated[dict[str, Any], Depends(upload_payload)]
