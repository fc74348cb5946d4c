"""Every model with every optimizer and scheduler trains a few batches through the real
entry-point code (build + Trainer.fit) on tiny synthetic data."""

import json

import pytest
import torch

from conftest import REPO
from test_config import options
from visionlab.app.assemble import build
from visionlab.app.config import ConfigError
from visionlab.app.fit import train


def fit_and_compare(cfg):
    datamodule, task, trainer = build(cfg)
    before = [p.detach().clone() for p in task.net.parameters()]
    trainer.fit(task, datamodule=datamodule)
    changed = sum(not torch.equal(a, b) for a, b in zip(before, task.net.parameters()))
    return task, trainer, changed


@pytest.mark.parametrize("model", ["mlp", "cnn"])
@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_each_model_trains_with_each_optimizer(model, optimizer, cfg_factory):
    task, trainer, changed = fit_and_compare(cfg_factory(f"model={model}", f"optimizer={optimizer}"))
    assert changed > 0
    assert torch.isfinite(trainer.callback_metrics["train/loss"]) and trainer.callback_metrics["train/loss"] > 0
    assert 0 < trainer.callback_metrics["train/acc"] <= 1 and 0 <= trainer.callback_metrics["val/acc"] <= 1


@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_each_scheduler_steps_the_learning_rate(scheduler, cfg_factory):
    cfg = cfg_factory(
        "model=mlp",
        "optimizer=sgd",
        f"scheduler={scheduler}",
        "trainer.max_epochs=2",
        "scheduler.factory.step_size=1" if scheduler == "step" else "seed=1",
    )
    task, trainer, changed = fit_and_compare(cfg)
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert changed > 0
    if scheduler in ("none", "plateau"):  # plateau needs 5 flat epochs before it acts
        assert lr == pytest.approx(0.01)
    else:
        assert lr != pytest.approx(0.01)


@pytest.mark.parametrize("limit,accumulate,steps", [(1.0, 1, 14), (0.5, 1, 7), (1.0, 4, 4)])
def test_onecycle_total_steps_are_lightnings_optimizer_steps(limit, accumulate, steps, cfg_factory):
    """14 batches an epoch (512 synthetic images less 64 for validation, batch 32), with
    Lightning's limits and accumulation applied (at least 8, see total_optimizer_steps)."""
    cfg = cfg_factory(
        "model=mlp",
        "scheduler=onecycle",
        f"trainer.limit_train_batches={limit}",
        f"+trainer.accumulate_grad_batches={accumulate}",
    )
    datamodule, task, trainer = build(cfg)
    trainer.fit(task, datamodule=datamodule)
    assert trainer.lr_scheduler_configs[0].scheduler.total_steps == max(steps, 8)
    assert trainer.global_step == steps


def test_a_one_cycle_schedule_without_an_end_is_refused_before_any_data_is_read(cfg_factory, monkeypatch):
    from visionlab.data import SyntheticDataModule

    monkeypatch.setattr(SyntheticDataModule, "setup", lambda *a, **k: pytest.fail("data was read"))
    with pytest.raises(ConfigError, match=r"^trainer.max_epochs=-1 with trainer.max_steps=-1 has no length in steps"):
        build(cfg_factory("model=mlp", "scheduler=onecycle", "trainer.max_epochs=-1"))


@pytest.mark.parametrize(
    "loss,extra", [("hinge", ()), ("cross_entropy", ("task.label_smoothing=0.1", "task.l1=1e-4", "task.l2=1e-3"))]
)
def test_losses_and_penalties_train(loss, extra, cfg_factory):
    task, trainer, changed = fit_and_compare(cfg_factory("model=mlp", f"task.loss={loss}", *extra))
    assert changed > 0 and torch.isfinite(trainer.callback_metrics["train/loss"])


def test_bf16_and_channels_last_reach_the_training_step(cfg_factory):
    """Lightning's precision plugin autocasts the step; the task makes the inputs NHWC."""
    datamodule, task, trainer = build(cfg_factory("model=cnn", "trainer.precision=bf16-mixed", "channels_last=true"))
    seen = []
    conv = task.net.features[0]
    conv.register_forward_hook(
        lambda m, args, out: seen.append(
            (out.dtype, args[0].is_contiguous(memory_format=torch.channels_last), m.training)
        )
    )
    trainer.fit(task, datamodule=datamodule)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and conv.weight.dtype == torch.float32
    assert {s for s in seen if s[2]} == {(torch.bfloat16, True, True)}


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_bf16_instructions_warns(native, monkeypatch, caplog, cfg_factory):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with caplog.at_level("WARNING", logger="visionlab"):
        build(cfg_factory("trainer.precision=bf16-mixed", "trainer.accelerator=cpu"))
    warned = [r.getMessage() for r in caplog.records if "no native bfloat16" in r.getMessage()]
    if native:
        assert warned == []
    else:
        assert len(warned) == 1 and "trainer.precision=bf16-mixed" in warned[0]


def test_full_run_writes_config_checkpoints_events_and_metrics(tmp_path, cfg_factory):
    cfg = cfg_factory(
        "model=mlp",
        "callbacks=default",
        "logger=many",
        "test=true",
        "trainer.enable_progress_bar=true",
        "trainer.enable_model_summary=true",
        "trainer.enable_checkpointing=true",
        "trainer.max_epochs=2",
    )
    metrics = train(cfg)
    assert {"test/acc", "test/f1", "test/auroc", "test/precision", "test/recall", "val/acc"} <= metrics.keys()
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tensorboard").iterdir())
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "train/loss", "train/acc", "val/loss", "val/acc"} <= set(header)
    assert json.loads((tmp_path / "metrics.json").read_text())["test/acc"] == pytest.approx(metrics["test/acc"])
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["seed"] == cfg.seed and info["versions"]["torch"] == torch.__version__


@pytest.mark.slow
def test_train_script_runs_a_multirun_sweep(tmp_path):
    import subprocess
    import sys

    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "train.py"),
            "-m",
            "data=synthetic",
            "model=mlp",
            "optimizer=sgd,adam",
            "model.dropout=0.0,0.5",
            "trainer.max_epochs=1",
            "logger=csv",
            "callbacks=none",
            "trainer.enable_progress_bar=false",
            f"paths.log_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = sorted((p for p in (tmp_path / "multirun").glob("*/*/*") if p.is_dir()), key=lambda p: int(p.name))
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    assert all((job / "metrics.json").exists() and (job / ".hydra" / "overrides.yaml").exists() for job in jobs)
