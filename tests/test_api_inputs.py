"""The Python API takes what people hold (visionlab.data.formats.arrays): one table of
inputs (shape, dtype, layout) -> the batch the net is fed, or the exact one-line refusal.
Nets are built in-process (no training); one checkpoint is saved for load_model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from visionlab.api import Model
from visionlab.data.formats.images import ImageError
from visionlab.models import MLP
from visionlab.training.checkpoint import LoadedModel

RNG = np.random.default_rng(0)
GRAY = RNG.integers(0, 256, (28, 28), dtype=np.uint8)  # one 28x28 image, HW
RGB = RNG.integers(0, 256, (28, 28, 3), dtype=np.uint8)  # one RGB image, HWC
FIVE = RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8)  # five images, NHW
ODD = RNG.integers(0, 256, (3, 40, 30), dtype=np.uint8)  # CHW RGB or NHW, neither the net's size


def model(shape: tuple[int, int, int]) -> Model:
    """A Model around an untrained net of input `shape`, as load_model returns it."""
    net = MLP(input_shape=list(shape), num_classes=10, hidden=[8]).eval()
    loaded = LoadedModel(
        net,
        tuple(f"c{i}" for i in range(10)),
        shape,
        (0.3,) * shape[0],
        (0.3,) * shape[0],
        {"_target_": "visionlab.models.MLP", "hidden": [8]},
        Path("x.ckpt"),
    )
    return Model(loaded, None)  # type: ignore[arg-type]


GRAY_NET, RGB_NET = model((1, 28, 28)), model((3, 28, 28))
ODD_AS_GRAY = np.asarray(
    Image.fromarray(ODD.transpose(1, 2, 0)).convert("L").resize((28, 28), Image.Resampling.BILINEAR)
)[None, None]
L_OF_RGB = np.asarray(Image.fromarray(RGB).convert("L"))  # what a file of RGB reads as on GRAY_NET


# (case, net, input, layout, expected batch (uint8 N, C, H, W) or the refusal's exact text)
CASES: list[tuple[str, Model, Callable[[], Any], str | None, np.ndarray | str]] = [
    ("HW uint8", GRAY_NET, lambda: GRAY, None, GRAY[None, None]),
    ("CHW (1, 28, 28): the issue's images[:1]", GRAY_NET, lambda: GRAY[None], None, GRAY[None, None]),
    ("NCHW (1, 1, 28, 28)", GRAY_NET, lambda: GRAY[None, None], None, GRAY[None, None]),
    ("NHWC (1, 28, 28, 1)", GRAY_NET, lambda: GRAY[None, :, :, None], None, GRAY[None, None]),
    ("HWC (28, 28, 1)", GRAY_NET, lambda: GRAY[:, :, None], None, GRAY[None, None]),
    ("NHW (5, 28, 28)", GRAY_NET, lambda: FIVE, None, FIVE[:, None]),
    ("NHW (3, 28, 28): 3 images, the net's C is 1", GRAY_NET, lambda: FIVE[:3], None, FIVE[:3, None]),
    ("N = 0, NHW", GRAY_NET, lambda: FIVE[:0], None, np.zeros((0, 1, 28, 28), np.uint8)),
    ("N = 0, NCHW", GRAY_NET, lambda: FIVE[:0, None], None, np.zeros((0, 1, 28, 28), np.uint8)),
    ("empty list", GRAY_NET, lambda: [], None, np.zeros((0, 1, 28, 28), np.uint8)),
    ("float 0-1", GRAY_NET, lambda: GRAY.astype(np.float32) / 255, None, GRAY[None, None]),
    ("float64 0-1 NHW", GRAY_NET, lambda: FIVE / 255.0, None, FIVE[:, None]),
    ("uint16 (8-bit x257)", GRAY_NET, lambda: GRAY.astype(np.uint16) * 257, None, GRAY[None, None]),
    ("int64 0-255 tensor", GRAY_NET, lambda: torch.from_numpy(GRAY).long(), None, GRAY[None, None]),
    ("float tensor CHW", GRAY_NET, lambda: torch.from_numpy(GRAY)[None].float() / 255, None, GRAY[None, None]),
    ("half tensor NCHW", GRAY_NET, lambda: (torch.from_numpy(FIVE)[:, None].float() / 255).half(), None, FIVE[:, None]),
    (
        "tensor needing grad",
        GRAY_NET,
        lambda: (torch.from_numpy(GRAY).float() / 255).requires_grad_(),
        None,
        GRAY[None, None],
    ),
    ("HWC RGB on a gray net: converted as a file", GRAY_NET, lambda: RGB, None, L_OF_RGB[None, None]),
    (
        "(3, 28, 28) on a gray net: NHW fits the net",
        GRAY_NET,
        lambda: RGB.transpose(2, 0, 1),
        None,
        RGB.transpose(2, 0, 1)[:, None],
    ),
    ("(3, 28, 28) on a gray net, layout=CHW", GRAY_NET, lambda: RGB.transpose(2, 0, 1), "CHW", L_OF_RGB[None, None]),
    ("HWC RGB on an RGB net", RGB_NET, lambda: RGB, None, RGB.transpose(2, 0, 1)[None]),
    ("CHW (3, 28, 28) on an RGB net", RGB_NET, lambda: RGB.transpose(2, 0, 1), None, RGB.transpose(2, 0, 1)[None]),
    ("NHWC on an RGB net", RGB_NET, lambda: np.stack([RGB, RGB]), None, np.stack([RGB.transpose(2, 0, 1)] * 2)),
    ("a PIL image", GRAY_NET, lambda: Image.fromarray(GRAY), None, GRAY[None, None]),
    (
        "a list mixing PIL, array, tensor",
        GRAY_NET,
        lambda: [Image.fromarray(GRAY), GRAY, torch.from_numpy(GRAY)[None], GRAY / 255.0],
        None,
        np.stack([GRAY[None]] * 4),
    ),
    ("(3, 40, 30) on a gray net: one image, not a batch", GRAY_NET, lambda: ODD, None, ODD_AS_GRAY),
    ("HWC (40, 30, 3) on a gray net", GRAY_NET, lambda: ODD.transpose(1, 2, 0), None, ODD_AS_GRAY),
    (
        "HWC (20, 24, 3) on an RGB net",
        RGB_NET,
        lambda: RGB[:20, :24],
        None,
        np.asarray(Image.fromarray(RGB[:20, :24]).resize((28, 28), Image.Resampling.BILINEAR)).transpose(2, 0, 1)[None],
    ),
    ("(3, 40, 30), layout=CHW", GRAY_NET, lambda: ODD, "CHW", ODD_AS_GRAY),
    (
        "(3, 40, 30), layout=NHW",
        GRAY_NET,
        lambda: ODD,
        "NHW",
        np.stack([np.asarray(Image.fromarray(x).resize((28, 28), Image.Resampling.BILINEAR)) for x in ODD])[:, None],
    ),
    # refusals: one line naming the input and what is allowed
    (
        "ambiguous (3, 40, 4)",
        GRAY_NET,
        lambda: ODD[:, :, :4],
        None,
        "images: shape (3, 40, 4) is ambiguous (HWC: 1 image of 3x40 with 4 channels; CHW: 1 image of 40x4 with "
        "3 channels); say which with layout='HWC' or layout='CHW'",
    ),
    (
        "ambiguous NCHW / NHWC",
        GRAY_NET,
        lambda: np.zeros((2, 3, 5, 3), np.uint8),
        None,
        "images: shape (2, 3, 5, 3) is ambiguous (NCHW: 2 images of 5x3 with 3 channels; NHWC: 2 images of 3x5 with "
        "3 channels); say which with layout='NCHW' or layout='NHWC'",
    ),
    (
        "a wrong layout",
        GRAY_NET,
        lambda: FIVE,
        "NCHW",
        "layout='NCHW' does not fit images of shape (5, 28, 28); expected one of HWC, CHW, NHW",
    ),
    (
        "flat (784,)",
        GRAY_NET,
        lambda: GRAY.ravel(),
        None,
        "images: shape (784,) is no image layout; expected HW, HWC, CHW, NHW, NHWC or NCHW with 1, 3 or 4 channels (C)",
    ),
    (
        "5-D",
        GRAY_NET,
        lambda: FIVE[None, :, None],
        None,
        "images: shape (1, 5, 1, 28, 28) is no image layout; expected HW, HWC, CHW, NHW, NHWC or NCHW with 1, 3 or 4 "
        "channels (C)",
    ),
    (
        "float 0-255",
        GRAY_NET,
        lambda: GRAY.astype(np.float32),
        None,
        f"images: float pixels from {GRAY.min()} to {GRAY.max()}; expected 0-1 (or uint8 0-255)",
    ),
    (
        "NaN",
        GRAY_NET,
        lambda: np.full((28, 28), np.nan),
        None,
        "images: float pixels include NaN or infinity; expected values in 0-1",
    ),
    (
        "negative integers",
        GRAY_NET,
        lambda: GRAY.astype(np.int16) - 300,
        None,
        "images: integer pixels from -300 to -45; expected 0-255 (8-bit) or 0-65535 (16-bit)",
    ),
    (
        "complex",
        GRAY_NET,
        lambda: GRAY.astype(np.complex64),
        None,
        "images: pixels of type complex64; expected uint8 0-255, 16-bit or float 0-1",
    ),
    (
        "a nested Python list",
        GRAY_NET,
        lambda: GRAY.tolist(),
        None,
        "images[0]: a list; expected a path, a PIL image, a numpy array or torch tensor (uint8 0-255 or float 0-1), "
        "or a list of them",
    ),
    (
        "a number",
        GRAY_NET,
        lambda: 5,
        None,
        "images: a int; expected a path, a PIL image, a numpy array or torch tensor (uint8 0-255 or float 0-1), "
        "or a list of them",
    ),
    (
        "a missing path",
        GRAY_NET,
        lambda: "no/such.png",
        None,
        "images[0]: no/such.png is not a file; a string is read as an image path",
    ),
    (
        "one odd image in a list",
        GRAY_NET,
        lambda: [GRAY, GRAY / 100.0],
        None,
        f"images[1]: float pixels from 0 to {GRAY.max() / 100:g}; expected 0-1 (or uint8 0-255)",
    ),
    (
        "int64 batch, one image over 255: all read as 16-bit",
        GRAY_NET,
        lambda: np.stack([GRAY.astype(np.int64), GRAY.astype(np.int64) * 257]),
        None,
        np.stack([np.round(GRAY / 257).astype(np.uint8), GRAY])[:, None],
    ),
    (
        "a batch inside a list",
        GRAY_NET,
        lambda: [FIVE],
        None,
        "images[0]: shape (5, 28, 28) is no image layout; expected HW or HWC or CHW with 1, 3 or 4 channels (C)",
    ),
]


@pytest.mark.parametrize(("case", "net", "make", "layout", "expected"), CASES, ids=[c[0] for c in CASES])
def test_api_input_table(case, net, make, layout, expected):
    if isinstance(expected, str):
        with pytest.raises(ImageError) as info:
            net.images(make(), layout=layout)
        assert str(info.value) == expected
    else:
        batch = net.images(make(), layout=layout)
        assert batch.dtype == torch.uint8
        np.testing.assert_array_equal(batch.numpy(), expected)


def test_predict_answers_one_image_and_a_batch_alike():
    """The issue's case: images[:1] raised "Cannot handle this data type"; 50 worked."""
    images = RNG.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    many, one = GRAY_NET.predict(images), GRAY_NET.predict(images[:1])
    assert len(many) == 50 and len(one) == 1
    assert [c for c, _ in one[0]["top"]] == [c for c, _ in many[0]["top"]]
    assert [p for _, p in one[0]["top"]] == pytest.approx([p for _, p in many[0]["top"]], abs=1e-6)
    assert GRAY_NET.predict(images[:0]) == []
    assert [c for c, _ in GRAY_NET.predict(torch.from_numpy(images[3]), top_k=2)[0]["top"]] == [
        c for c, _ in many[3]["top"][:2]
    ]


def test_a_path_and_its_pixels_give_the_same_answer(tmp_path):
    Image.fromarray(GRAY).save(tmp_path / "x.png")
    assert GRAY_NET.predict(tmp_path / "x.png") == GRAY_NET.predict(str(tmp_path / "x.png")) == GRAY_NET.predict(GRAY)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_a_tensor_on_the_gpu_is_taken():
    np.testing.assert_array_equal(GRAY_NET.images(torch.from_numpy(FIVE).cuda()).numpy(), FIVE[:, None])


@pytest.mark.parametrize("name", ["a,b.ckpt", "a=b.ckpt", "it's [1].ckpt", "${oc.env:HOME}.ckpt"])
def test_load_model_takes_any_file_name(tmp_path, monkeypatch, name):
    """Paths go to Hydra quoted (visionlab.app.config.override), never parsed as grammar."""
    import visionlab

    net = MLP(input_shape=[1, 28, 28], num_classes=10, hidden=[8])
    meta = {
        "input_shape": [1, 28, 28],
        "model": {"_target_": "visionlab.models.MLP", "hidden": [8]},
        "classes": [f"c{i}" for i in range(10)],
        "mean": [0.3],
        "std": [0.3],
    }
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "visionlab": meta}, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    loaded = visionlab.load_model(tmp_path / name)
    assert loaded.loaded.path == tmp_path / name and loaded.classes[0] == "c0"
