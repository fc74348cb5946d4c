"""`make gpu-check`: visionlab on one CUDA GPU in at most five minutes, one summary file.

Runs, each as its own process with the Python that runs this script and visionlab's
sources from src/ (nothing is installed): the GPU tests (`pytest -m gpu`), the default run
for 2 epochs, every entry point on its checkpoint with device=cuda (evaluate, predict with
Grad-CAM, export, lr_find, report, the Python API), one request to the server, fast_93
for 3 epochs, and the benchmark's cases (the notes' MLP at batch 32, the default CNN at 64
and 512). Writes OUT/summary.md (default outputs/gpu_check/) with one row per step and the
benchmark tables, and exits non-zero when a step failed. Without CUDA it says so in one
line and exits 2. A step that would need a package this machine lacks is skipped, named.

    python scripts/gpu_check.py [--out DIR] [--budget SECONDS]
"""

from __future__ import annotations

import argparse
import base64
import csv
import importlib.util
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


@dataclass
class Step:
    name: str
    status: str = "skipped"
    seconds: float = 0.0
    figures: str = ""
    output: str = ""


@dataclass
class Check:
    out: Path
    deadline: float
    steps: list[Step] = field(default_factory=list)

    def run(
        self,
        name: str,
        args: list[str],
        limit: float,
        needs: tuple[str, ...] = (),
        figures: Callable[[], str] | None = None,
    ) -> Step:
        """Run `args` (a visionlab script or module) under `limit` seconds and what is left of the budget."""
        step = Step(name)
        self.steps.append(step)
        missing = [m for m in needs if importlib.util.find_spec(m) is None]
        left = self.deadline - time.monotonic()
        if missing or left < 10:
            step.figures = f"needs {', '.join(missing)}, not installed here" if missing else "the time budget is spent"
            return step
        start = time.monotonic()
        try:
            done = subprocess.run(
                [PY, *args], cwd=REPO, env=environment(), capture_output=True, text=True, timeout=min(limit, left)
            )
            step.status = "ok" if done.returncode == 0 else f"failed ({done.returncode})"
            step.output = (done.stdout + done.stderr)[-3000:]
        except subprocess.TimeoutExpired as err:
            step.status, step.output = "timed out", str(err.stdout or "")[-3000:]
        step.seconds = time.monotonic() - start
        if step.status == "ok" and figures is not None:
            try:
                step.figures = figures()
            except (OSError, KeyError, ValueError) as err:
                step.figures = f"no figures ({type(err).__name__}: {err})"
        print(f"gpu-check: {name}: {step.status} in {step.seconds:.0f} s {step.figures}", flush=True)
        return step


def environment() -> dict[str, str]:
    """This environment with src/ first on the path (visionlab runs from the sources)."""
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def run_figures(folder: Path) -> Callable[[], str]:
    """Test accuracy and the median epoch seconds of a training run folder."""

    def read() -> str:
        metrics = json.loads((folder / "metrics.json").read_text())
        with (folder / "history.csv").open() as f:
            seconds = sorted(float(r["epoch_seconds"]) for r in csv.DictReader(f))
        return (
            f"test/acc {metrics.get('test/acc', float('nan')):.4f}, epoch seconds "
            f"{', '.join(f'{s:.1f}' for s in seconds)}"
        )

    return read


def best_checkpoint(folder: Path) -> str:
    """The checkpoint the run tested (metrics.json), else its last.ckpt."""
    try:
        tested = json.loads((folder / "metrics.json").read_text()).get("test/ckpt_path")
    except (OSError, ValueError):
        tested = None
    return tested or str(folder / "checkpoints" / "last.ckpt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_request(check: Check, ckpt: str) -> None:
    """Start the server on the checkpoint with device=cuda, wait for /health, POST one image."""
    step = Step("serve: one request (device=cuda)")
    check.steps.append(step)
    if importlib.util.find_spec("litserve") is None:
        step.figures = "needs litserve, not installed here"
        return
    port, start = free_port(), time.monotonic()
    server = subprocess.Popen(
        [
            PY,
            "scripts/serve.py",
            f"ckpt_path={ckpt}",
            "device=cuda",
            f"serve.port={port}",
            f"hydra.run.dir={check.out / 'serve'}",
        ],
        cwd=REPO,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until = min(time.monotonic() + 90, check.deadline)
        while time.monotonic() < wait_until and server.poll() is None:
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).read().strip(b'"') == b"ok":
                    break
            except OSError:
                time.sleep(1)
        info = json.loads(urllib.request.urlopen(f"{url}/info", timeout=10).read())
        body = json.dumps({"image": base64.b64encode(png(info["model"]["input_shape"])).decode()}).encode()
        request = urllib.request.Request(f"{url}/predict", body, {"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
        top = answer["top_k"][0]
        step.status, step.figures = "ok", f"{answer['backend']}: {top['class']} {top['probability']:.3f}"
    except (OSError, ValueError, KeyError) as err:
        step.status, step.figures = "failed", f"{type(err).__name__}: {err}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            output = server.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            output = server.communicate()[0]
        step.output = output[-3000:] if step.status != "ok" else ""
    step.seconds = time.monotonic() - start
    print(f"gpu-check: {step.name}: {step.status} in {step.seconds:.0f} s {step.figures}", flush=True)


def png(input_shape: list[int]) -> bytes:
    """A grey gradient image of the model's input size, as PNG bytes."""
    from PIL import Image

    channels, height, width = input_shape
    image = Image.linear_gradient("L").resize((width, height))
    buffer = io.BytesIO()
    (image if channels == 1 else image.convert("RGB")).save(buffer, format="PNG")
    return buffer.getvalue()


API = """
import sys, torch, visionlab
model = visionlab.load_model(sys.argv[1])
model.net.cuda()
images = torch.randint(0, 256, (4, *model.loaded.input_shape), dtype=torch.uint8)
print(model.predict(images)[0]["class"], next(model.net.parameters()).device)
print(model.evaluate("test", ["device=cuda", "hydra.run.dir=" + sys.argv[2]]))
"""


def summary(check: Check, header: list[str], tables: list[Path]) -> str:
    lines = ["# visionlab GPU check", "", *header, "", "| step | status | seconds | figures |", "|---|---|---|---|"]
    lines += [f"| {s.name} | {s.status} | {s.seconds:.0f} | {s.figures} |" for s in check.steps]
    for table in tables:
        if table.exists():
            lines += ["", table.read_text()]
    for s in check.steps:
        if s.status not in ("ok", "skipped") and s.output:
            lines += ["", f"## {s.name}: the end of its output", "", "```text", s.output, "```"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "gpu_check")
    parser.add_argument("--budget", type=float, default=290, help="seconds for all the steps together")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device here (torch {torch.__version__} sees none); nothing was run", file=sys.stderr)
        return 2
    import lightning

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    check = Check(out, time.monotonic() + args.budget)
    header = [
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()}: "
        f"{torch.cuda.get_device_name(0)}, host {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__} (CUDA {torch.version.cuda}), lightning {lightning.__version__}, "
        f"Python {platform.python_version()}"
    ]
    check.run(
        "pytest -m gpu",
        ["-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py"],
        150,
        needs=("pytest",),
        figures=lambda: check.steps[0].output.strip().splitlines()[-1],
    )
    default = out / "default"
    check.run(
        "train: default config, 2 epochs",
        ["scripts/train.py", "trainer=gpu", "trainer.max_epochs=2", f"hydra.run.dir={default}"],
        90,
        figures=run_figures(default),
    )
    ckpt = best_checkpoint(default)
    check.run(
        "evaluate device=cuda",
        ["scripts/evaluate.py", f"ckpt_path={ckpt}", "device=cuda", f"hydra.run.dir={out / 'evaluate'}"],
        40,
    )
    check.run(
        "predict device=cuda explain=gradcam",
        [
            "scripts/predict.py",
            f"ckpt_path={ckpt}",
            "device=cuda",
            "predict.from_test=8",
            "explain=gradcam",
            f"hydra.run.dir={out / 'predict'}",
        ],
        40,
        needs=("captum",),
    )
    check.run(
        "export format=onnx",
        ["scripts/export.py", f"ckpt_path={ckpt}", "format=onnx", f"hydra.run.dir={out / 'export'}"],
        40,
        needs=("onnxscript", "onnxruntime"),
    )
    check.run(
        "lr_find trainer=gpu",
        ["scripts/lr_find.py", "trainer=gpu", "tune.num_training=40", f"hydra.run.dir={out / 'lr_find'}"],
        40,
    )
    check.run("report", ["scripts/report.py", str(out)], 20)
    check.run("Python API on cuda", ["-c", API, ckpt, str(out / "api_evaluate")], 40)
    serve_request(check, ckpt)
    fast = out / "fast_93"
    check.run(
        "train: experiment=fast_93, 3 epochs",
        ["scripts/train.py", "experiment=fast_93", "trainer=gpu", "trainer.max_epochs=3", f"hydra.run.dir={fast}"],
        60,
        figures=run_figures(fast),
    )
    tables = [out / "benchmark_mlp.md", out / "benchmark_cnn.md"]
    for table in tables:
        table.unlink(missing_ok=True)
    for name, case, sizes, table in (
        ("benchmark: notes_mlp at 32", "notes_mlp", ["32"], tables[0]),
        ("benchmark: default_cnn at 64 and 512", "default_cnn", ["64", "512"], tables[1]),
    ):
        check.run(
            name,
            [
                "scripts/benchmark.py",
                "--cases",
                case,
                "--batch-sizes",
                *sizes,
                "--epochs",
                "3",
                "--json",
                str(table.with_suffix(".json")),
                "--markdown",
                str(table),
                "trainer=gpu",
            ],
            120,
        )
    (out / "summary.md").write_text(summary(check, header, tables))
    failed = [s.name for s in check.steps if s.status not in ("ok", "skipped")]
    print(
        f"gpu-check: {len(check.steps) - len(failed)} of {len(check.steps)} steps passed or skipped; "
        f"summary in {out / 'summary.md'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
