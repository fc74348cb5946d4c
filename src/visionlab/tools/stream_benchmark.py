"""Memory and speed of the stream path against the memory path, on a folder of JPEGs.

`python scripts/stream_benchmark.py --root DIR --make 20000`: makes the folder when it is
missing (224x224 JPEGs in 10 classes), times the conversion into a stream, then trains one
epoch (the training split, no validation) through the memory path and through the stream
path with each `--workers` count, each in its own `scripts/train.py` process. For each run:
the peak memory of the process tree (RSS summed, and PSS, which counts pages that forked
workers share once), images per second, and the share of the epoch spent waiting for
data (Lightning's SimpleProfiler: `train_dataloader_next` over `run_training_epoch`).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from visionlab.app.config import CONF_DIR
from visionlab.utils.extras import MissingExtra, need

TRAIN = CONF_DIR.parent / "scripts" / "train.py"


def make_jpegs(root: Path, count: int, size: int = 224, classes: int = 10) -> None:
    """`count` JPEGs of smooth random colour fields with noise, `classes` class folders."""
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        field = Image.fromarray(rng.integers(0, 255, (7, 7, 3), dtype=np.uint8)).resize((size, size))
        noisy = np.asarray(field, dtype=np.int16) + rng.integers(-12, 12, (size, size, 3))
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)


class TreeMemory:
    """Samples the summed RSS and PSS of a process and its descendants; keeps the peaks."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.psutil = need("psutil", "stream", "scripts/stream_benchmark.py")
        self.root, self.interval = self.psutil.Process(pid), interval
        self.peak_rss = self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = pss = 0
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except self.psutil.Error:
                break
            for proc in procs:
                try:
                    info = proc.memory_full_info()
                except self.psutil.Error:
                    continue
                rss, pss = rss + info.rss, pss + info.pss
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def profiler_totals(path: Path) -> dict[str, float]:
    """Action -> total seconds, from a SimpleProfiler report."""
    totals = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and re.fullmatch(r"[0-9.eE+-]+", cells[3] or "x"):
            totals[cells[0]] = float(cells[3])
    return totals


def convert(root: str, data_dir: str, image_size: int, workers: int) -> None:
    """Child process: convert `root` into a stream and print the seconds it took (JSON)."""
    from visionlab.data import ImageFolderDataModule

    start = time.perf_counter()
    dm = ImageFolderDataModule(
        root=root, image_size=image_size, loader="stream", data_dir=data_dir, num_workers=workers
    )
    dm.prepare_data()
    dm.setup()
    print(json.dumps({"seconds": time.perf_counter() - start, "counts": dm.opened_stream().counts}))


def run(args: list[str], out: Path) -> dict[str, Any]:
    """One training epoch in a subprocess under TreeMemory; its figures."""
    prof = out / "profile"
    cmd = [
        sys.executable,
        str(TRAIN),
        *args,
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        "test=false",
        "callbacks=none",
        "logger=none",
        "trainer.enable_checkpointing=false",
        "trainer.enable_progress_bar=false",
        "+trainer.profiler._target_=lightning.pytorch.profilers.SimpleProfiler",
        f"+trainer.profiler.dirpath={prof}",
        "+trainer.profiler.filename=simple",
        f"paths.log_dir={out}",
        f"hydra.run.dir={out}/run",
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    memory = TreeMemory(proc.pid)
    _, err = proc.communicate()
    memory.stop()
    figures = {
        "wall_s": time.perf_counter() - start,
        "peak_rss_gib": memory.peak_rss / 2**30,
        "peak_pss_gib": memory.peak_pss / 2**30,
        "returncode": proc.returncode,
    }
    if proc.returncode != 0:  # e.g. -9: the kernel's out-of-memory killer; the peak so far is kept
        print(f"training failed ({proc.returncode}): {' '.join(cmd)}\n{err[-2000:]}", file=sys.stderr)
        return figures
    totals = profiler_totals(next(prof.glob("*simple*.txt")))
    epoch = totals["run_training_epoch"]
    return {
        **figures,
        "epoch_s": epoch,
        "data_wait_share": totals["[_TrainingEpochLoop].train_dataloader_next"] / epoch,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="the image folder (made with --make if missing)")
    parser.add_argument("--make", type=int, default=0, help="JPEGs to make when --root does not exist")
    parser.add_argument("--out", type=Path, default=Path("outputs/stream_benchmark"))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--convert-workers", type=int, default=2)
    parser.add_argument("--no-memory", action="store_true", help="skip the memory path's run")
    opts = parser.parse_args(argv)
    try:
        for module in ("psutil", "litdata"):
            need(module, "stream", "scripts/stream_benchmark.py")
    except MissingExtra as err:
        sys.exit(f"error: {err}")
    if not opts.root.exists():
        make_jpegs(opts.root, opts.make, opts.image_size)
    opts.out.mkdir(parents=True, exist_ok=True)
    cache = opts.out / "cache"
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from visionlab.tools.stream_benchmark import "
            "convert; convert(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))",
            str(opts.root),
            str(cache),
            str(opts.image_size),
            str(opts.convert_workers),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    conversion = json.loads(child.stdout.strip().splitlines()[-1])
    images = sum(conversion["counts"].values())
    results: dict[str, Any] = {
        "conversion": {**conversion, "images_per_s": images / conversion["seconds"], "workers": opts.convert_workers}
    }
    common = [
        "data=image_folder",
        f"data.root={opts.root}",
        f"data.data_dir={cache}",
        f"data.image_size={opts.image_size}",
        f"data.batch_size={opts.batch_size}",
        "model=mobilenet_v3_small",
        "model.freeze_backbone=true",
    ]
    runs = [("memory", ["data.loader=memory"])] if not opts.no_memory else []
    runs += [(f"stream, {w} workers", ["data.loader=stream", f"data.num_workers={w}"]) for w in opts.workers]
    for name, extra in runs:
        figures = run([*common, *extra], opts.out / name.replace(", ", "_").replace(" ", "_"))
        if "epoch_s" in figures:
            figures["images_per_s"] = conversion["counts"]["train"] / figures["epoch_s"]
        results[name] = figures
        print(name, json.dumps(figures), flush=True)
    (opts.out / "results.json").write_text(json.dumps(results, indent=2))
    print("| run | peak RSS (tree) | peak PSS (tree) | train images/s | waiting for data |\n|---|---|---|---|---|")
    for name, _ in runs:
        r = results[name]
        speed = (
            f"{r['images_per_s']:.0f} | {100 * r['data_wait_share']:.0f}%"
            if "epoch_s" in r
            else f"failed (exit {r['returncode']}) | -"
        )
        print(f"| {name} | {r['peak_rss_gib']:.2f} GiB | {r['peak_pss_gib']:.2f} GiB | {speed} |")
    c = results["conversion"]
    print(
        f"conversion: {images} images in {c['seconds']:.0f} s ({c['images_per_s']:.0f} images/s, "
        f"{c['workers']} workers)"
    )


if __name__ == "__main__":
    main()
