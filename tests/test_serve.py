"""The HTTP server of scripts/serve.py, run for real: one server per backend in a
subprocess on a free 127.0.0.1 port, a real HTTP client (httpx), and headless Chromium on
the page. A tiny checkpoint trained on synthetic data, and its ONNX export, are served."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict
from PIL import Image

from conftest import TINY_RUN as TINY
from visionlab.app.config import compose_config
from visionlab.serve.uploads import Upload  # at module level: FastAPI resolves the annotation here
from visionlab.tools.browser import chromium, headless_chrome

REPO = Path(__file__).resolve().parents[1]
MAX_UPLOAD = 200_000
STARTUP_S = 300  # two servers starting together on a shared 2-core machine: mostly imports


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model_arg: str, folder: Path) -> Server:
    port, log = free_port(), folder / "server.log"
    command = [
        sys.executable,
        "scripts/serve.py",
        model_arg,
        f"serve.port={port}",
        "serve.batch_timeout=0.05",
        f"serve.max_upload_bytes={MAX_UPLOAD}",
        "device=cpu",
        f"hydra.run.dir={folder}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    return Server(f"http://127.0.0.1:{port}", process, log)


def wait_ready(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"server exited with {server.process.returncode}:\n{server.log_text()[-3000:]}")
        try:
            if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"server not ready after {STARTUP_S} s:\n{server.log_text()[-3000:]}")


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(60)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (C, H, W) image."""
    buffer = io.BytesIO()
    Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(side: int = 20000) -> bytes:
    """A valid PNG header declaring side x side pixels, in under a hundred bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint in a run folder as scripts/train.py leaves it."""
    from visionlab.app.fit import train

    run = tmp_path_factory.mktemp("run")
    cfg = compose_config(list(TINY), run)
    with open_dict(cfg):
        cfg.trainer.default_root_dir = str(run)
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    train(cfg)
    return next((run / "checkpoints").glob("epoch*.ckpt"))


@pytest.fixture(scope="module")
def servers(ckpt, tmp_path_factory, request) -> Iterator[dict[str, Server]]:
    """A server per backend: the checkpoint's, and its ONNX export's (exported while the
    first one starts: starting is mostly imports)."""
    started = {"pytorch": start(f"ckpt_path={ckpt}", tmp_path_factory.mktemp("serve_pt"))}
    try:
        onnx = request.getfixturevalue("onnx_export")
        started["onnx"] = start(f"model_path={onnx}", tmp_path_factory.mktemp("serve_onnx"))
        for server in started.values():
            wait_ready(server)
        yield started
    finally:
        for server in started.values():
            stop(server)


@pytest.fixture(scope="module")
def onnx_export(ckpt, tmp_path_factory) -> Path:
    """The checkpoint exported to ONNX, with its JSON sidecar."""
    from visionlab.entrypoints.export import export

    exported = tmp_path_factory.mktemp("export")
    return Path(export(compose_config([f"ckpt_path={ckpt}", "format=onnx"], exported, config_name="export")))


@pytest.fixture(scope="module")
def server(servers) -> Server:
    return servers["pytorch"]


@pytest.fixture(scope="module")
def test_images(ckpt) -> np.ndarray:
    """The first 20 test images of the run's data, uint8 (N, C, H, W)."""
    from visionlab.app.runs import build_datamodule, load_run

    _, combined = load_run(compose_config([f"ckpt_path={ckpt}"], config_name="predict"))
    return build_datamodule(combined).splits["test"][0][:20].numpy()


def classify(url: str, image: bytes, as_json: bool = False) -> dict:
    if as_json:
        response = httpx.post(url + "/predict", json={"image": base64.b64encode(image).decode()}, timeout=60)
    else:
        response = httpx.post(url + "/predict", files={"image": ("x.png", image, "image/png")}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_test_images_get_predict_py_answers(server, ckpt, test_images, tmp_path):
    from visionlab.entrypoints.predict import predict

    rows = predict(
        compose_config(
            [f"ckpt_path={ckpt}", "predict.from_test=20", "predict.top_k=5"], tmp_path, config_name="predict"
        )
    )
    answers = [classify(server.url, png(image), as_json=i % 2 == 1) for i, image in enumerate(test_images)]
    assert [a["top_k"][0]["class"] for a in answers] == [r["top1"] for r in rows]
    for answer, row in zip(answers, rows):
        assert [t["class"] for t in answer["top_k"]] == [row[f"top{k}"] for k in range(1, 6)]
        assert [t["probability"] for t in answer["top_k"]] == pytest.approx(
            [row[f"p{k}"] for k in range(1, 6)], abs=2e-6
        )
        assert answer["backend"] == "pytorch" and answer["model"] == f"CNN {ckpt.name}"


def test_onnx_backend_answers_like_pytorch(servers, test_images):
    for image in test_images[:5]:
        by_backend = {name: classify(s.url, png(image)) for name, s in servers.items()}
        torch_probs = {t["class"]: t["probability"] for t in by_backend["pytorch"]["top_k"]}
        onnx_probs = {t["class"]: t["probability"] for t in by_backend["onnx"]["top_k"]}
        assert by_backend["onnx"]["backend"] == "onnx" and onnx_probs.keys() == torch_probs.keys()
        assert all(abs(onnx_probs[c] - p) <= 1e-4 for c, p in torch_probs.items())


def test_preview_is_the_image_as_the_model_sees_it(server):
    rgb = np.random.default_rng(0).integers(0, 255, (3, 40, 30), dtype=np.uint8)  # RGB, other size
    response = httpx.post(server.url + "/predict?preview=true", files={"image": ("rgb.png", png(rgb), "image/png")})
    preview = Image.open(io.BytesIO(base64.b64decode(response.json()["input_png"])))
    assert preview.mode == "L" and preview.size == (28, 28)  # converted as predict.py converts files
    from visionlab.data.formats.images import read_image

    expected = read_image(io.BytesIO(png(rgb)), (1, 28, 28), 10**6, background=0).numpy()[0]
    np.testing.assert_array_equal(np.asarray(preview), expected)


def bad_requests(good: bytes) -> list[tuple[str, dict, int, str]]:
    """(what, httpx.post arguments, status, part of the reason) for each bad input."""

    def upload(data: bytes, name: str = "x.png") -> dict:
        return {"files": {"image": (name, data, "image/png")}}

    return [
        ("not an image", upload(b"hello, world", "notes.png"), 400, "notes.png: not an image"),
        ("truncated PNG", upload(good[: len(good) // 2]), 400, "unreadable image"),
        ("0 bytes", upload(b""), 400, "empty upload"),
        ("over the size limit", upload(b"\0" * (MAX_UPLOAD + 1)), 413, "over the limit"),
        ("decompression bomb", upload(bomb_png()), 413, "too large to decode safely"),
        (
            "malformed JSON",
            {"content": b'{"image": ', "headers": {"content-type": "application/json"}},
            400,
            "malformed JSON",
        ),
        ("wrong base64", {"json": {"image": "not*base64!"}}, 400, "not valid base64"),
        ("JSON without image", {"json": {"picture": "abc"}}, 400, "must be an object"),
        (
            "wrong content type",
            {"content": good, "headers": {"content-type": "text/plain"}},
            415,
            "content type 'text/plain' is not accepted",
        ),
        (
            "multipart without the image field",
            {"files": {"photo": ("x.png", good, "image/png")}},
            400,
            "no file field named image",
        ),
    ]


def test_upload_checks_in_process():
    """The request checks alone, on a bare FastAPI app: the odd cases, quickly."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from visionlab.serve.uploads import Limits

    app = FastAPI()
    app.state.upload_limits = Limits((3, 8, 8), 10_000, 10_000, 0)

    @app.post("/p")
    async def echo(payload: Upload) -> dict:
        return {"shape": list(payload["pixels"].shape), "preview": payload["preview"]}

    client = TestClient(app)
    gray = png(np.zeros((1, 20, 10), dtype=np.uint8))
    data_url = "data:image/png;base64," + base64.b64encode(gray).decode()
    assert client.post("/p", json={"image": data_url, "preview": True}).json() == {"shape": [3, 8, 8], "preview": True}
    assert client.post("/p", files={"file": ("g.png", gray)}, data={"preview": "no"}).json()["preview"] is False
    for kwargs, status, reason in (
        ({"content": b"x", "headers": {"content-type": "multipart/form-data"}}, 400, "Missing boundary"),
        ({"content": b"\xff\xfe", "headers": {"content-type": "application/json"}}, 400, "malformed JSON"),
        ({"json": {"image": 5}}, 400, "must be an object"),
        ({"content": b"{}"}, 415, "content type '(none)'"),
        (
            {"files": {"image": ("big.png", png(np.zeros((1, 200, 200), dtype=np.uint8)))}},
            413,
            "too large to decode safely (200x200 pixels, limit serve.max_pixels=10000)",
        ),
    ):
        response = client.post("/p", **kwargs)
        assert (response.status_code, reason in response.json()["detail"]) == (status, True), response.text


def test_bad_input_gets_a_4xx_with_one_line_and_the_next_request_succeeds(server, test_images):
    good = png(test_images[0])
    for what, kwargs, status, reason in bad_requests(good):
        response = httpx.post(server.url + "/predict", timeout=60, **kwargs)
        detail = response.json()["detail"]
        assert (response.status_code, reason in detail, "\n" in detail) == (status, True, False), (what, detail)
        assert classify(server.url, good)["top_k"], what
    log = server.log_text()
    assert "Traceback" not in log and "ERROR" not in log and "Exception" not in log, log[-3000:]


def test_200_concurrent_requests_succeed_are_batched_and_counted(server, test_images):
    from visionlab.serve.metrics import metric_value

    images = [png(image) for image in test_images]
    before = httpx.get(server.url + "/metrics").text

    async def send_all() -> list[int]:
        # A connection each: on a busy machine a client can leave a kept-alive connection idle
        # past uvicorn's keep-alive timeout (5 s), and a POST is not retried on a closed one.
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=120) as client:
            responses = await asyncio.gather(
                *(client.post("/predict", files={"image": ("x.png", images[i % 20])}) for i in range(200)),
                return_exceptions=True,
            )
        return [getattr(r, "status_code", repr(r)) for r in responses]

    statuses = asyncio.run(send_all())
    assert statuses == [200] * 200, (sorted(set(map(str, statuses))), server.log_text()[-3000:])
    after = httpx.get(server.url + "/metrics").text

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("visionlab_requests_total", path="/predict", status="200") == 200
    assert delta("visionlab_request_seconds_count", path="/predict") == 200
    assert delta("visionlab_predicted_total") == 200  # over all classes
    assert delta("visionlab_batch_size_sum") == 200  # every image in exactly one model call
    assert delta("visionlab_batch_size_count") < 200  # and some calls answered several requests


def test_page_and_health(server):
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and '<script src="/static/app.js">' in page.text
    assert "classify" in httpx.get(server.url + "/static/app.js").text
    assert httpx.get(server.url + "/health").text == "ok"


@pytest.mark.skipif(
    chromium() is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; `make test` tries)",
)
def test_a_browser_uploads_an_image_and_sees_its_class(server, test_images, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image = tmp_path / "test_image.png"
    image.write_bytes(png(test_images[3]))
    expected = classify(server.url, image.read_bytes())["top_k"][0]["class"]
    driver = headless_chrome(tmp_path / "profile", window="900,700")
    try:
        driver.get(server.url + "/")
        driver.find_element(By.ID, "file").send_keys(str(image))
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#bars .class-name"))
        names = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#bars .class-name")]
        shot = tmp_path / "page.png"
        driver.save_screenshot(str(shot))
        print(f"screenshot: {shot}")
        assert names[0] == expected and len(names) == 5
        assert driver.find_element(By.ID, "status").text.startswith(expected)
        assert driver.find_element(By.ID, "input").get_attribute("src").startswith("data:image/png;base64,")
    finally:
        driver.quit()


def test_bad_options_fail_in_one_line_before_serving(ckpt, tmp_path, monkeypatch, capsys):
    from visionlab.serve.server import main

    onnx = tmp_path / "model.onnx"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU
    for args, message in (
        ([f"ckpt_path={ckpt}", "device=cuda"], "device='cuda': no CUDA device is available here; expected auto or cpu"),
        ([f"ckpt_path={ckpt}", "serve.port=80"], "serve.port=80 is not allowed; expected an integer in [1024, 65535]"),
        ([f"ckpt_path={ckpt}", "serve.max_batch_size=0"], "serve.max_batch_size=0 is not allowed"),
        ([f"ckpt_path={ckpt}", "serve.timeout=null"], "serve.timeout=null is not allowed; expected a number of"),
        ([f"ckpt_path={ckpt}", "device=gpu"], "device='gpu' is not allowed; expected one of auto, cpu, cuda"),
        ([f"model_path={ckpt}"], f"model_path={ckpt}: expected an .onnx file written by scripts/export.py"),
        ([f"ckpt_path={ckpt}", f"model_path={onnx}"], "give either ckpt_path=RUN/checkpoints/X.ckpt or model_path"),
        ([f"ckpt_path={tmp_path / 'none.ckpt'}"], f"ckpt_path={tmp_path / 'none.ckpt'}: no such file"),
    ):
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"  # a refusal inside the job leaves error.txt there
        monkeypatch.setattr(sys, "argv", ["serve.py", *args, f"hydra.run.dir={out}"])
        GlobalHydra.instance().clear()
        with pytest.raises(SystemExit) as exit_info:
            main()
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"error: {message}")


def descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found += [int(c) for c in (task / "children").read_text().split()]
    return found + [g for c in found for g in descendants(c)]


def running(pids: list[int]) -> list[str]:
    """Command lines of the processes among `pids` still running (not zombies)."""
    alive = []
    for pid in pids:
        try:
            if "zombie" not in Path(f"/proc/{pid}/status").read_text():
                alive.append(Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " "))
        except OSError:
            pass
    return alive


def test_sigterm_stops_the_server_and_its_workers(servers):
    server = servers["onnx"]
    workers = descendants(server.process.pid)
    assert len(workers) >= 3  # the HTTP server, the inference worker, LitServe's manager
    server.process.send_signal(signal.SIGTERM)
    start = time.monotonic()
    while time.monotonic() - start < 10:
        try:
            httpx.get(server.url + "/health", timeout=1)
        except httpx.TransportError:
            break
        time.sleep(0.1)
    refused_after = time.monotonic() - start
    # After LitServe's shutdown, Python's own exit (torch, lightning) takes seconds more on a busy machine.
    assert server.process.wait(60) == 0
    while running(workers) and time.monotonic() - start < 20:
        time.sleep(0.1)
    assert refused_after < 5 and not running(workers)
    log = server.log_text()
    assert "Shutting down LitServe" in log and "Traceback" not in log, log[-3000:]


def test_loadtest_measures_a_running_server(server):
    from visionlab.tools.loadtest import run_load

    result = run_load(server.url, requests=24, clients=4)
    assert result["failures"] == 0 and result["requests"] == 24 and result["throughput"] > 0
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"] and 1 <= result["mean_batch"] <= 4
    with pytest.raises(ValueError, match="only targets this machine"):
        run_load("http://example.com:8000", requests=1, clients=1)


def test_a_hostile_or_vanishing_client_gets_a_4xx_and_no_traceback(server, test_images):
    """A deep JSON (200,000 in the probe) was a 500 with a RecursionError; a client leaving mid-upload
    was a traceback counted as a 500. Now: a 400, and a 499 (client closed) in /metrics."""
    import json

    from visionlab.serve.metrics import metric_value

    deep = httpx.post(
        server.url + "/predict",
        content=b"[" * 99_000 + b"]" * 99_000,  # under MAX_UPLOAD
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert (deep.status_code, deep.json()["detail"].startswith("malformed JSON: nested too deeply")) == (400, True)

    def counted(**labels: str) -> float:
        return metric_value(
            httpx.get(server.url + "/metrics").text, "visionlab_requests_total", path="/predict", **labels
        )

    before, left_before = counted(), counted(status="499")
    port = int(server.url.rsplit(":", 1)[1])
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(
                b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b'Content-Length: 50000\r\n\r\n{"image": "iVBOR'
            )  # and leaves
    body = json.dumps({"image": base64.b64encode(png(test_images[1])).decode()}).encode()
    for _ in range(3):  # a whole request, then gone before the answer: a 499 too, or a 200 sent to nobody
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(
                b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and counted() < before + 6:
        time.sleep(0.2)
    assert counted() == before + 6 and counted(status="499") >= left_before + 3  # each counted once
    assert metric_value(httpx.get(server.url + "/metrics").text, "visionlab_requests_total", status="500") == 0
    assert classify(server.url, png(test_images[0]))["top_k"]
    log = server.log_text()
    assert "Traceback" not in log and "RecursionError" not in log and "ClientDisconnect" not in log, log[-3000:]


def test_an_onnx_sidecar_that_disagrees_with_its_model_refuses_to_start(onnx_export, tmp_path, monkeypatch, capsys):
    """/health said ok and every request failed; now the server does not start."""
    import json

    from visionlab.app.config import ConfigError
    from visionlab.serve.backends import OnnxBackend
    from visionlab.serve.server import main

    info = json.loads(onnx_export.with_suffix(".json").read_text())
    fewer = {**info, "classes": info["classes"][:-1]}
    larger = {**info, "input": {**info["input"], "shape": [info["input"]["shape"][0], 1, 32, 32]}}
    renamed = {**info, "input": {**info["input"], "name": "pixels"}}
    for name, sidecar, problem in (
        ("fewer", fewer, f"it says {len(info['classes']) - 1} classes, the model gives {len(info['classes'])} scores"),
        ("larger", larger, "it says input shape [1, 32, 32], the model refuses it ("),
        ("renamed", renamed, f"it says input 'pixels', the model takes '{info['input']['name']}'"),
    ):
        onnx = tmp_path / f"{name}.onnx"
        shutil.copy(onnx_export, onnx)
        onnx.with_suffix(".json").write_text(json.dumps(sidecar))
        with pytest.raises(ConfigError) as refused:
            OnnxBackend(onnx)
        assert str(refused.value).startswith(f"model_path={onnx}: {name}.json does not fit the model: {problem}")
    monkeypatch.setattr(
        sys, "argv", ["serve.py", f"model_path={tmp_path / 'fewer.onnx'}", f"hydra.run.dir={tmp_path / 'out'}"]
    )
    GlobalHydra.instance().clear()
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err[-1].startswith(f"error: model_path={tmp_path / 'fewer.onnx'}: fewer.json")
