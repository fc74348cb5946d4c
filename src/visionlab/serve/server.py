"""Serve entry point: `python scripts/serve.py ckpt_path=RUN/checkpoints/X.ckpt` (or
`model_path=X.onnx`, an export) answers POST /predict with the top-k classes, batching
requests dynamically, and serves the try-it page (GET /), GET /health and GET /metrics
(see conf/serve.yaml). Ctrl-C or SIGTERM stops it, workers included."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from visionlab.app.cli import hydra_entry
from visionlab.app.config import validate
from visionlab.serve.backends import Backend, BackendSource
from visionlab.utils.checks import Check, integer, is_int, is_number, non_negative, one_of, required
from visionlab.utils.extras import need

HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # LitServe's choices; 127.0.0.1 (this machine only) by default
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
DEVICES = ("auto", "cpu", "cuda")
STATIC = resources.files("visionlab.serve") / "static"


# serve.yaml's own keys; the checkpoint's data and model check theirs. Every serve.* key and
# the device must be set: null is no default here.
CHECKS = (
    integer("seed", 0),
    *required(
        one_of("serve.host", HOSTS),
        Check("serve.port", lambda v: is_int(v) and 1024 <= v <= 65535, "an integer in [1024, 65535]"),
        integer("serve.workers", 1),
        integer("serve.max_batch_size", 1, "an integer >= 1 (1: no batching)"),
        non_negative("serve.batch_timeout", "a number of seconds >= 0"),
        integer("serve.top_k", 1),
        integer("serve.max_upload_bytes", 1),
        integer("serve.max_pixels", 1),
        Check("serve.timeout", lambda v: is_number(v) and v > 0, "a number of seconds > 0"),
        one_of("serve.log_level", LOG_LEVELS),
        one_of("device", DEVICES),
    ),
)


def check_options(cfg: DictConfig) -> None:
    """One line naming the first bad serve.* value (or device) and what is allowed; also
    run here, after Hydra, for the ways in (multirun, --cfg) that skip the early check."""
    validate(cfg, CHECKS)
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

    from visionlab.data.formats.images import background_of
    from visionlab.serve.api import ClassifierAPI
    from visionlab.serve.metrics import RequestMetrics, metrics_endpoint
    from visionlab.serve.uploads import Limits

    options = cfg.serve
    api = ClassifierAPI(source, int(options.top_k), int(options.max_batch_size), float(options.batch_timeout))
    accelerator = "cpu" if source.kind == "onnx" else cfg.device
    server = ls.LitServer(
        api,
        accelerator=accelerator,
        devices=1,
        workers_per_device=int(options.workers),
        timeout=float(options.timeout),
        middlewares=[RequestMetrics],
        model_metadata={
            "name": backend.name,
            "backend": backend.kind,
            "classes": list(backend.classes),
            "input_shape": list(backend.input_shape),
        },
    )
    app = server.app
    app.state.upload_limits = Limits(
        backend.input_shape, int(options.max_upload_bytes), int(options.max_pixels), background_of(backend.mean)
    )
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
    need("litserve", "serve", "scripts/serve.py")
    source = BackendSource.from_config(cfg)
    backend = source.load("cpu")
    folder = metrics_folder()
    try:
        server = build_server(cfg, source, backend)
        del backend  # each worker loads its own
        os.register_at_fork(after_in_child=_in_fork)
        options = cfg.serve
        host = f"[{options.host}]" if ":" in options.host else options.host
        print(
            f"Serving {server.model_metadata['name']} ({source.kind}) on http://{host}:{options.port}/ "
            f"(page /, POST /predict, GET /health, GET /metrics); Ctrl-C stops",
            flush=True,
        )
        signal.signal(signal.SIGTERM, _stop)
        server.run(host=options.host, port=int(options.port), log_level=options.log_level, generate_client_file=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


main = hydra_entry("serve", serve, checks=CHECKS)

if __name__ == "__main__":
    main()
