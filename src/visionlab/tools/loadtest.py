"""Load test of the server, on this machine only (127.0.0.1): a bounded number of POST
/predict requests from N concurrent clients; throughput and p50/p95/p99 latency, with
dynamic batching off (max_batch_size=1) and on.

`python scripts/loadtest.py ckpt_path=RUN/checkpoints/X.ckpt` starts one server per batch
size in turn (or `model_path=X.onnx`); `--url http://127.0.0.1:PORT` measures a running one.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np
from PIL import Image

from visionlab.serve.metrics import metric_value
from visionlab.utils.errors import ConfigError

LOCAL_HOSTS = ("127.0.0.1", "localhost")


def sample_images(input_shape: list[int], count: int = 32, seed: int = 0) -> list[bytes]:
    """PNG files of random images of the model's input shape."""
    channels, height, width = input_shape
    rng = np.random.default_rng(seed)
    files = []
    for _ in range(count):
        pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(buffer, format="PNG")
        files.append(buffer.getvalue())
    return files


async def _send(url: str, requests: int, clients: int, images: list[bytes]) -> tuple[list[float], float, int]:
    latencies: list[float] = []
    failures = 0
    next_index = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal failures
        for i in next_index:  # shared: each request is sent once, by whichever client is free
            start = time.perf_counter()
            try:
                response = await http.post("/predict", files={"image": ("x.png", images[i % len(images)], "image/png")})
                failures += response.status_code != 200
            except httpx.TransportError:  # e.g. a kept-alive connection the server had just closed
                failures += 1
            latencies.append(time.perf_counter() - start)

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=clients)) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return latencies, time.perf_counter() - start, failures


def run_load(url: str, requests: int, clients: int) -> dict[str, Any]:
    """Send `requests` requests from `clients` concurrent clients to the server at `url`."""
    if urlparse(url).hostname not in LOCAL_HOSTS:
        raise ConfigError(f"--url={url}: the load test only targets this machine ({', '.join(LOCAL_HOSTS)})")
    info = httpx.get(url + "/info", timeout=10).json()
    before = httpx.get(url + "/metrics", timeout=10).text
    latencies, wall, failures = asyncio.run(_send(url, requests, clients, sample_images(info["model"]["input_shape"])))
    after = httpx.get(url + "/metrics", timeout=10).text
    calls = metric_value(after, "visionlab_batch_size_count") - metric_value(before, "visionlab_batch_size_count")
    p50, p95, p99 = (float(np.percentile(latencies, q)) * 1000 for q in (50, 95, 99))
    return {
        "requests": requests,
        "clients": clients,
        "failures": failures,
        "throughput": requests / wall,
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "mean_batch": requests / calls if calls else float("nan"),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the server at {url} was not ready after {timeout:.0f} s")


def with_server(
    model_arg: str, max_batch_size: int, batch_timeout: float, requests: int, clients: int, log_dir: Path
) -> dict[str, Any]:
    """Start scripts/serve.py with this batch size on a free port, measure, stop it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "visionlab.serve.server",
        model_arg,
        f"serve.port={port}",
        "serve.log_level=warning",
        f"serve.max_batch_size={max_batch_size}",
        f"serve.batch_timeout={batch_timeout}",
        f"hydra.run.dir={log_dir / f'batch{max_batch_size}'}",
    ]
    log = log_dir / f"server_batch{max_batch_size}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        try:
            wait_ready(url, process)
        except (RuntimeError, TimeoutError) as err:
            raise RuntimeError(f"{err}; its log ends:\n{log.read_text(errors='replace')[-2000:]}") from None
        run_load(url, min(requests, 2 * clients), clients)  # warm-up, not measured
        return {"max_batch_size": max_batch_size, **run_load(url, requests, clients)}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(120)


def table(rows: list[dict[str, Any]]) -> str:
    """The results as a markdown table (BENCHMARKS.md)."""
    lines = [
        "| max_batch_size | requests | clients | throughput (req/s) | p50 (ms) | p95 (ms) | p99 (ms) "
        "| mean batch | failures |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.get('max_batch_size', '?')} | {r['requests']} | {r['clients']} | {r['throughput']:.0f} "
            f"| {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['mean_batch']:.1f} "
            f"| {r['failures']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="ckpt_path=X.ckpt or model_path=X.onnx: start servers to measure")
    parser.add_argument("--url", help="measure this running server instead (127.0.0.1 only)")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--batch-sizes", default="1,16", help="max_batch_size values, comma-separated (1: off)")
    parser.add_argument("--batch-timeout", type=float, default=0.005)
    args = parser.parse_args(argv)
    if bool(args.model) == bool(args.url):
        parser.error("give either ckpt_path=... / model_path=... or --url")
    if args.model and not args.model.startswith(("ckpt_path=", "model_path=")):
        parser.error(f"{args.model}: expected ckpt_path=X.ckpt or model_path=X.onnx")
    if args.requests < 1 or args.clients < 1:
        parser.error("--requests and --clients must be >= 1")
    try:
        sizes = [int(s) for s in args.batch_sizes.split(",")]
    except ValueError:
        parser.error(f"--batch-sizes={args.batch_sizes}: expected integers, e.g. 1,16")
    try:
        if args.url:
            rows = [run_load(args.url.rstrip("/"), args.requests, args.clients)]
        else:
            with tempfile.TemporaryDirectory(prefix="visionlab-loadtest-") as folder:
                rows = [
                    with_server(args.model, size, args.batch_timeout, args.requests, args.clients, Path(folder))
                    for size in sizes
                ]
    except (ConfigError, RuntimeError, TimeoutError, httpx.HTTPError) as err:
        sys.exit(f"error: {err}")
    print(f"{os.cpu_count()} CPUs; batch_timeout={args.batch_timeout} s")
    print(table(rows))
