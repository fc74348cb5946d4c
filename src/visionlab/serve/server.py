"""Serve entry point: `python scripts/serve.py ckpt_path=RUN/checkpoints/X.ckpt` (or
`model_path=X.onnx`, an export) answers POST /predict with the top-k classes, batching
requests dynamically, and serves the try-it page (GET /), GET /health and GET /metrics
(see conf/serve.yaml). Ctrl-C or SIGTERM stops it, workers included."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from visionlab.app.cli import hydra_entry
from visionlab.app.config import ConfigError
from visionlab.serve.backends import Backend, BackendSource
from visionlab.utils.checks import integer

HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # LitServe's choices; 127.0.0.1 (this machine only) by default
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
DEVICES = ("auto", "cpu", "cuda")
STATIC = resources.files("visionlab.serve") / "static"


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


OPTIONS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("host", lambda v: v in HOSTS, f"one of {', '.join(HOSTS)}"),
    ("port", lambda v: _int(v) and 1024 <= v <= 65535, "an integer in [1024, 65535]"),
    ("workers", lambda v: _int(v) and v >= 1, "an integer >= 1"),
    ("max_batch_size", lambda v: _int(v) and v >= 1, "an integer >= 1 (1: no batching)"),
    ("batch_timeout", lambda v: _num(v) and v >= 0, "a number of seconds >= 0"),
    ("top_k", lambda v: _int(v) and v >= 1, "an integer >= 1"),
    ("max_upload_bytes", lambda v: _int(v) and v >= 1, "an integer >= 1"),
    ("max_pixels", lambda v: _int(v) and v >= 1, "an integer >= 1"),
    ("timeout", lambda v: _num(v) and v > 0, "a number of seconds > 0"),
    ("log_level", lambda v: v in LOG_LEVELS, f"one of {', '.join(LOG_LEVELS)}"),
)


def check_options(cfg: DictConfig) -> None:
    """One line naming the first bad serve.* value (or device) and what is allowed."""
    for key, ok, allowed in OPTIONS:
        value = cfg.serve.get(key)
        if not ok(value):
            raise ConfigError(f"serve.{key}={value!r} is not allowed; expected {allowed}")
    if cfg.get("device") not in DEVICES:
        raise ConfigError(f"device={cfg.get('device')!r} is not allowed; expected one of {', '.join(DEVICES)}")
    if cfg.get("model_path") is None:  # the ONNX backend runs on the CPU whatever the device
        from visionlab.app.runs import pick_device

        pick_device(str(cfg.device))  # cuda on a machine without one: one line before anything starts


def metrics_folder() -> Path:
    """A fresh folder for prometheus_client's multiprocess files, named in the environment
    before visionlab.serve.metrics is imported here or in a worker."""
    folder = Path(tempfile.mkdtemp(prefix="visionlab-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    return folder


def build_server(cfg: DictConfig, source: BackendSource, backend: Backend) -> Any:
    """The LitServer: the API on /predict, the page on /, Prometheus text on /metrics."""
    import litserve as ls
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    from visionlab.serve.api import ClassifierAPI
    from visionlab.serve.metrics import RequestMetrics, metrics_endpoint
    from visionlab.serve.uploads import Limits

    options = cfg.serve
    api = ClassifierAPI(source, int(options.top_k), int(options.max_batch_size), float(options.batch_timeout))
    accelerator = "cpu" if source.kind == "onnx" else cfg.device
    server = ls.LitServer(api, accelerator=accelerator, devices=1, workers_per_device=int(options.workers),
                          timeout=float(options.timeout), middlewares=[RequestMetrics],
                          model_metadata={"name": backend.name, "backend": backend.kind,
                                          "classes": list(backend.classes), "input_shape": list(backend.input_shape)})
    app = server.app
    app.state.upload_limits = Limits(backend.input_shape, int(options.max_upload_bytes), int(options.max_pixels))
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != "/"]  # LitServe's "/"
    with resources.as_file(STATIC) as static:
        app.add_api_route("/", lambda: FileResponse(static / "index.html"), methods=["GET"], include_in_schema=False)
        app.mount("/static", StaticFiles(directory=static), name="static")
    app.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
    return server


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # LitServe's graceful shutdown, as on Ctrl-C


def _in_fork() -> None:
    """In the HTTP server, a fork of this process: SIGTERM ends it (after uvicorn's own
    graceful stop) instead of raising, and its few torch ops (decoding) need no threads."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    torch.set_num_threads(1)


def serve(cfg: DictConfig) -> None:
    """Check the options, load the model once (bad paths fail here, in one line), serve."""
    check_options(cfg)
    source = BackendSource.from_config(cfg)
    backend = source.load("cpu")
    folder = metrics_folder()
    try:
        server = build_server(cfg, source, backend)
        del backend  # each worker loads its own
        os.register_at_fork(after_in_child=_in_fork)
        options = cfg.serve
        host = f"[{options.host}]" if ":" in options.host else options.host
        print(f"Serving {server.model_metadata['name']} ({source.kind}) on http://{host}:{options.port}/ "
              f"(page /, POST /predict, GET /health, GET /metrics); Ctrl-C stops", flush=True)
        signal.signal(signal.SIGTERM, _stop)
        server.run(host=options.host, port=int(options.port), log_level=options.log_level,
                   generate_client_file=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


CHECKS = (integer("seed", 0),)  # serve.yaml's own; the checkpoint's data and model check theirs
main = hydra_entry("serve", serve, checks=CHECKS)

if __name__ == "__main__":
    main()
