"""Kill, preempt and resume: a resumed run ends with exactly the weights and metrics of a
run that was never stopped."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO

pytestmark = pytest.mark.slow

# the default one-cycle schedule: it makes Lightning build the train loader before the checkpoint is read
COMMON = [
    "data=synthetic",
    "model=mlp",
    "model.dropout=0.2",
    "data.augment.rotation=10",
    "scheduler=onecycle",
    "trainer.max_epochs=4",
    "trainer.deterministic=true",
    "logger=csv",
    "callbacks.progress_bar.refresh_rate=0",
    "callbacks.early_stopping.patience=100",
]


def run_train(args, log_dir: Path, wait: bool = True, **kw):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "train.py"),
        *args,
        f"paths.log_dir={log_dir}",
        f"hydra.run.dir={log_dir}/run",
    ]
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, **kw)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, **kw)


def stall(epoch: int, step: int, marker: Path) -> list[str]:
    return [
        "+callbacks.stall._target_=helpers.stall.StallAt",
        f"+callbacks.stall.epoch={epoch}",
        f"+callbacks.stall.step={step}",
        f"+callbacks.stall.marker={marker}",
    ]


def wait_for(marker: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "training never reached the stall point"
        time.sleep(0.1)


def final_state(run: Path) -> tuple[dict, dict]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    weights = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    metrics = json.loads((run / "metrics.json").read_text())
    # wall times differ, and so does the folder of the tested checkpoint
    return weights, {k: v for k, v in metrics.items() if not k.startswith("time/") and k != "test/ckpt_path"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("reference")
    done = run_train(COMMON, log_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    return final_state(log_dir / "run")


def assert_same(reference, resumed):
    (ref_w, ref_m), (got_w, got_m) = reference, resumed
    assert ref_w.keys() == got_w.keys()
    assert all(torch.equal(ref_w[k], got_w[k]) for k in ref_w)
    assert ref_m == got_m


def test_sigkill_mid_epoch_then_resume_gives_identical_weights_and_metrics(reference, tmp_path):
    marker = tmp_path / "stalled"
    proc = run_train([*COMMON, *stall(epoch=2, step=1, marker=marker)], tmp_path, wait=False)
    wait_for(marker, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    run = tmp_path / "run"
    assert not (run / "metrics.json").exists()
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["epoch"] == 1  # the end of epoch 2 (0-based 1): nothing of epoch 3 was kept
    resumed = run_train([f"ckpt_path={run}/checkpoints/last.ckpt", "~callbacks.stall"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same(reference, final_state(run))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_saves_a_mid_epoch_checkpoint_that_resumes_exactly(sig, reference, tmp_path):
    marker = tmp_path / "stalled"
    proc = run_train([*COMMON, *stall(epoch=1, step=1, marker=marker)], tmp_path, wait=False)
    wait_for(marker, proc)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 143, proc.stderr.read()[-3000:]
    run = tmp_path / "run"
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == int(marker.read_text())  # mid-epoch: right after the stalled batch
    assert not list((run / "checkpoints").glob(".*.part"))
    resumed = run_train([f"ckpt_path={run}/checkpoints/last.ckpt", "~callbacks.stall"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same(reference, final_state(run))


def test_a_checkpoint_saved_at_a_batch_end_resumes_with_the_next_batch(cfg_factory, tmp_path):
    """ModelCheckpoint(every_n_train_steps) saves in on_train_batch_end, before Lightning
    counts the batch completed (it does on restoring): the memory loader must not serve it again."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from visionlab.app.assemble import build

    class Seen(L.Callback):
        def __init__(self) -> None:
            self.batches: list[list[int]] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.batches.append(batch[1].tolist())

    def fit(*overrides: str, ckpt_path=None, callbacks=()) -> list[list[int]]:
        datamodule, task, trainer = build(
            cfg_factory(
                "model=mlp",
                "scheduler=none",
                "trainer.limit_train_batches=6",
                "trainer.limit_val_batches=0",
                "trainer.enable_checkpointing=true",
                *overrides,
            )
        )
        seen = Seen()
        trainer.callbacks.extend([seen, *callbacks])
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
        return seen.batches

    reference = fit()
    first = fit("trainer.max_steps=3", callbacks=[ModelCheckpoint(tmp_path, every_n_train_steps=3, save_top_k=-1)])
    (saved,) = tmp_path.glob("*step=3.ckpt")
    resumed = fit(ckpt_path=saved)
    assert first + resumed == reference
