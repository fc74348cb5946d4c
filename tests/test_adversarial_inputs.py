"""Issue #25's probe, input family: odd image files, odd HTTP requests, odd predict options
and odd run folders for the report. Each table row names its input and the expected
outcome: the correct result, or the one-line refusal. All in-process, on untrained nets
or hand-made run folders (nothing is trained here)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from conftest import run_main
from test_api_inputs import GRAY_NET, model
from visionlab.data.formats.images import ImageError, background_of, read_image
from visionlab.serve.uploads import Limits, Upload, decode

SHAPE = (1, 28, 28)
RNG = np.random.default_rng(25)
# A bright shape on black, lopsided so that a rotation shows: what Fashion-MNIST looks like.
OBJECT = np.zeros((28, 28), np.uint8)
OBJECT[4:24, 6:12] = RNG.integers(120, 256, (20, 6), dtype=np.uint8)
OBJECT[4:8, 6:22] = 255


def saved(array: np.ndarray | Image.Image, fmt: str, **options) -> bytes:
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def exif_rotated() -> bytes:
    """OBJECT stored turned a quarter left, with EXIF orientation 6 ("rotate 90 CW to view")."""
    image = Image.fromarray(np.rot90(OBJECT, 1).copy())
    exif = Image.Exif()
    exif[0x0112] = 6
    return saved(image, "PNG", exif=exif)


def white_on_transparent(mode: str) -> bytes:
    """OBJECT as alpha over white everywhere: a white shape on a transparent page."""
    white = np.full((28, 28), 255, np.uint8)
    if mode == "RGBA":
        return saved(np.dstack([white, white, white, OBJECT]), "PNG")
    return saved(Image.fromarray(np.dstack([white, OBJECT]), "LA"), "PNG")


def palette_gif() -> bytes:
    """OBJECT's shape in white (index 1) on red (index 0) marked transparent."""
    image = Image.fromarray((OBJECT > 0).astype(np.uint8), "P")
    image.putpalette([255, 0, 0, 255, 255, 255])
    return saved(image, "GIF", transparency=0)


def composite(background: int) -> np.ndarray:
    """What the eye sees of white_on_transparent() on a `background` grey."""
    alpha = OBJECT.astype(np.float64) / 255
    return np.round(255 * alpha + background * (1 - alpha)).astype(np.uint8)


# (case, file bytes, background, expected uint8 (H, W) or the refusal's text after the name)
IMAGE_FILES: list[tuple[str, Callable[[], bytes], int, np.ndarray | str]] = [
    ("8-bit PNG", lambda: saved(OBJECT, "PNG"), 0, OBJECT),
    ("16-bit PNG, 8-bit x257 (was 34% at 255)", lambda: saved(OBJECT.astype(np.uint16) * 257, "PNG"), 0, OBJECT),
    (
        "16-bit PNG, any 16-bit values",
        lambda: saved(np.full((28, 28), 32896, np.uint16), "PNG"),
        0,
        np.full((28, 28), 128, np.uint8),
    ),
    ("EXIF orientation 6", exif_rotated, 0, OBJECT),
    ("float TIFF 0-1", lambda: saved(OBJECT.astype(np.float32) / 255, "TIFF"), 0, OBJECT),
    ("float TIFF 0-255", lambda: saved(OBJECT.astype(np.float32), "TIFF"), 0, OBJECT),
    ("int32 TIFF 0-255", lambda: saved(OBJECT.astype(np.int32), "TIFF"), 0, OBJECT),
    ("int32 TIFF 16-bit values", lambda: saved(OBJECT.astype(np.int32) * 257, "TIFF"), 0, OBJECT),
    ("white on transparent RGBA, dark data", lambda: white_on_transparent("RGBA"), 0, composite(0)),
    ("white on transparent LA, dark data", lambda: white_on_transparent("LA"), 0, composite(0)),
    ("white on transparent RGBA, light data", lambda: white_on_transparent("RGBA"), 255, composite(255)),
    ("palette GIF: white on a transparent red index", palette_gif, 0, np.where(OBJECT > 0, 255, 0).astype(np.uint8)),
    (
        "float TIFF with NaN",
        lambda: saved(np.full((28, 28), np.nan, np.float32), "TIFF"),
        0,
        "float pixels include NaN or infinity; expected values in 0-1",
    ),
    (
        "float TIFF -1 to 1",
        lambda: saved(np.linspace(-1, 1, 784, dtype=np.float32).reshape(28, 28), "TIFF"),
        0,
        "float pixels from -1 to 1; expected 0-1 (or uint8 0-255)",
    ),
    (
        "int32 TIFF with negatives",
        lambda: saved(OBJECT.astype(np.int32) - 1000, "TIFF"),
        0,
        "integer pixels from -1000 to -745; expected 0-255 (8-bit) or 0-65535 (16-bit)",
    ),
    (
        "int32 TIFF over 16 bits",
        lambda: saved(OBJECT.astype(np.int32) * 1000, "TIFF"),
        0,
        "integer pixels from 0 to 255000; expected 0-255 (8-bit) or 0-65535 (16-bit)",
    ),
]


@pytest.mark.parametrize(("case", "make", "background", "expected"), IMAGE_FILES, ids=[c[0] for c in IMAGE_FILES])
def test_image_files_read_as_the_eye_sees_them(case, make, background, expected, tmp_path):
    """read_image (predict), serve's decode and the Python API give the same answer."""
    data = make()
    path = tmp_path / "x.img"
    path.write_bytes(data)
    if isinstance(expected, str):
        with pytest.raises(ImageError) as info:
            read_image(path, SHAPE, 10**6, background=background)
        assert str(info.value) == f"{path}: {expected}"
        with pytest.raises(Exception) as served:
            decode(data, "up.tif", Limits(SHAPE, 10**6, 10**6, background))
        assert (served.value.status_code, served.value.detail) == (400, f"up.tif: {expected}")
        return
    got = read_image(path, SHAPE, 10**6, background=background).numpy()[0]
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(decode(data, "up", Limits(SHAPE, 10**6, 10**6, background))[0], expected)
    api = model(SHAPE) if background == 0 else model_with_mean(0.9)
    np.testing.assert_array_equal(api.images(path).numpy()[0, 0], expected)


def model_with_mean(mean: float):
    net = model(SHAPE)
    net.loaded.mean = (mean,)
    return net


def test_the_background_follows_the_training_data():
    """Fashion-MNIST (mean 0.286) is light on black; a light data set gets white."""
    assert (background_of([0.286]), background_of([0.49, 0.48, 0.45]), background_of([0.8])) == (0, 0, 255)


# --- serve: requests that must get a 4xx and never a traceback -------------------------------------------------


@pytest.fixture(scope="module")
def upload_app() -> TestClient:
    app = FastAPI()
    app.state.upload_limits = Limits(SHAPE, 4_000_000, 10_000, 0)

    @app.post("/p")
    async def echo(payload: Upload) -> dict:
        return {"shape": list(payload["pixels"].shape)}

    return TestClient(app, raise_server_exceptions=True)


DEEP = 200_000
REQUESTS = [
    ("200,000-deep JSON list", {"content": b"[" * DEEP + b"]" * DEEP}, 400, "malformed JSON: nested too deeply"),
    (
        "200,000-deep JSON object",
        {"content": b'{"a":' * DEEP + b"1" + b"}" * DEEP},
        400,
        "malformed JSON: nested too deeply",
    ),
    ("JSON image: a list", {"content": json.dumps({"image": [1, 2]}).encode()}, 400, "must be an object"),
    ("JSON null", {"content": b"null"}, 400, "must be an object"),
    (
        "16-bit PNG as base64",
        {
            "content": json.dumps(
                {"image": base64.b64encode(saved(OBJECT.astype(np.uint16) * 257, "PNG")).decode()}
            ).encode()
        },
        200,
        "",
    ),
]


@pytest.mark.parametrize(("case", "kwargs", "status", "reason"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_odd_requests_get_a_4xx_in_one_line(upload_app, case, kwargs, status, reason):
    response = upload_app.post("/p", headers={"content-type": "application/json"}, **kwargs)
    assert response.status_code == status, response.text
    if reason:
        assert reason in response.json()["detail"] and "\n" not in response.json()["detail"]


def test_a_client_that_disconnects_is_counted_499_without_a_traceback():
    """The middleware sees the disconnect Starlette raises while the body is read."""
    import asyncio

    from starlette.requests import Request

    from visionlab.serve.metrics import DISCONNECTED, RequestMetrics
    from visionlab.serve.metrics import REQUESTS as COUNTS

    async def app(scope, receive, send):
        await Request(scope, receive).body()  # raises ClientDisconnect
        raise AssertionError("the body cannot be complete")

    messages = iter([{"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}])
    sent: list[dict] = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    counted = COUNTS.labels("/predict", str(DISCONNECTED))
    before = counted._value.get()
    scope = {"type": "http", "path": "/predict", "method": "POST", "headers": [], "query_string": b""}
    asyncio.run(RequestMetrics(app)(scope, receive, send))  # no exception: nothing for Starlette to log as a 500
    assert (counted._value.get() - before, sent) == (1, [])


# --- predict's options: one line naming the value, before anything is read -------------------------------------


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    net = model(SHAPE)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    torch.save(
        {"state_dict": {f"net.{k}": v for k, v in net.net.state_dict().items()}, "visionlab": net.loaded.describe()},
        path,
    )
    return path


PREDICT_OPTIONS = [
    ("predict.from_test=-5", "predict.from_test=-5 is not allowed; expected an integer >= 0 (0: predict the inputs)"),
    ("predict.top_k=abc", "predict.top_k='abc' is not allowed; expected an integer >= 1"),
    ("predict.top_k=0", "predict.top_k=0 is not allowed; expected an integer >= 1"),
    ("predict.batch_size=0", "predict.batch_size=0 is not allowed; expected an integer >= 1"),
    ("predict.batch_size=null", "predict.batch_size=null is not allowed; expected an integer >= 1"),
    ("predict.max_pixels=-1", "predict.max_pixels=-1 is not allowed; expected an integer >= 1"),
    # without the group: Hydra's own message suggested adding the typo with `+`
    ("from_test=-5", "from_test=-5: from_test is not a key of predict's config; did you mean predict.from_test?"),
    ("top_k=abc", "top_k=abc: top_k is not a key of predict's config; did you mean predict.top_k?"),
    ("batch_size=0", "batch_size=0: batch_size is not a key of predict's config; did you mean predict.batch_size?"),
]


@pytest.mark.parametrize(("option", "message"), PREDICT_OPTIONS, ids=[p[0] for p in PREDICT_OPTIONS])
def test_predict_options_are_refused_in_one_line(tiny_ckpt, tmp_path, monkeypatch, option, message):
    from visionlab.entrypoints.predict import main

    monkeypatch.chdir(tmp_path)
    code, err = run_main(main, [f"ckpt_path={tiny_ckpt}", "inputs=[x.png]", option])
    assert (code, err) == (2, f"error: {message}\n")
    assert not (tmp_path / "outputs").exists()  # refused before a run folder was made


def test_the_api_refuses_a_bad_top_k_in_one_line():
    with pytest.raises(ValueError, match=r"^top_k='abc' is not allowed; expected an integer >= 1$"):
        GRAY_NET.predict(OBJECT, top_k="abc")  # type: ignore[arg-type]


# --- report: finished runs are ranked, the others come last; odd metrics are named ----------------------------


def make_run(
    root: Path, name: str, final: dict | str | None = None, val_acc: list[float] = (), error: str | None = None
) -> None:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (run / ".hydra" / "overrides.yaml").write_text(f"- seed={name[-1]}\n")
    if final is not None:
        (run / "metrics.json").write_text(final if isinstance(final, str) else json.dumps(final))
    if val_acc:
        rows = "".join(f"{e},{a},0.5,0.4\n" for e, a in enumerate(val_acc))
        (run / "csv").mkdir()
        (run / "csv" / "metrics.csv").write_text("epoch,val/acc,val/loss,train/loss\n" + rows)
    if error:
        (run / "error.txt").write_text(error + "\n")


def test_report_ranks_finished_runs_first_and_names_odd_metrics(tmp_path, capsys):
    from visionlab.entrypoints.report import main

    make_run(tmp_path, "job0", val_acc=[0.99], error="error: CUDA out of memory")  # failed, good partial curve
    make_run(tmp_path, "job1", {"val/acc": 0.80, "test/acc": 0.79}, [0.7, 0.8])
    make_run(tmp_path, "job2", '{"val/acc": NaN, "test/acc": 0.5}')  # JSON's NaN, as json.dump writes it
    make_run(tmp_path, "job3", {"val/acc": 0.90, "test/acc": "abc"}, [0.9])
    make_run(tmp_path, "job4", {"val/acc": 0.85, "test/acc": 0.84}, [0.85, float("nan")])
    make_run(tmp_path, "job5", {"val/acc": 0.70, "test/acc": 0.69}, [0.7])
    main([str(tmp_path), "--sort", "best_val_acc"])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    lines = (tmp_path / "report.csv").read_text().splitlines()[1:]
    ranked = [(line.split(",")[0], line.split(",")[1]) for line in lines]
    assert ranked == [
        ("job4", "ok"),
        ("job1", "ok"),
        ("job5", "ok"),
        ("job0", "failed"),
        ("job2", "ok"),
        ("job3", "unreadable"),
    ]
    assert "metrics.json: test/acc='abc' is not a number" in lines[-1]
    main([str(tmp_path), "--sort", "test_acc"])
    order = [line.split(",")[0] for line in (tmp_path / "report.csv").read_text().splitlines()[1:]]
    assert order[:4] == ["job4", "job1", "job5", "job2"]  # job2's test/acc is a number; its NaN val/acc is not ranked


def test_report_reads_a_runs_overrides_as_text_never_resolving_them(tmp_path, monkeypatch):
    """An overrides.yaml line is shown as written: OmegaConf would have resolved
    ${oc.env:...} into the report (and oc.create into a node)."""
    from visionlab.entrypoints.report import main

    monkeypatch.setenv("VISIONLAB_TEST_SECRET", "hunter2")
    make_run(tmp_path, "job0", {"val/acc": 0.8, "test/acc": 0.8}, [0.8])
    (tmp_path / "job0" / ".hydra" / "overrides.yaml").write_text("- +x=${oc.env:VISIONLAB_TEST_SECRET}\n")
    main([str(tmp_path)])
    report = (tmp_path / "report.csv").read_text()
    assert "hunter2" not in report and "${oc.env:VISIONLAB_TEST_SECRET}" in report
