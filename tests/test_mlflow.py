"""logger=mlflow: a short run read back with MLflow's own client (params, metric history,
artifacts), all in a local folder."""

from __future__ import annotations

import pytest

from visionlab.app.fit import flat_hparams, train

mlflow = pytest.importorskip("mlflow", reason="mlflow not installed (pip install -e .[mlflow])")


def test_a_run_logs_params_metric_history_and_artifacts_to_mlflow(cfg_factory, tmp_path):
    cfg = cfg_factory(
        "data=synthetic",
        "model=mlp",
        "model.hidden=[16]",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "test=false",
        "logger=mlflow",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
        "callbacks.validation_images=null",
        "callbacks.model_graph=null",
        "callbacks.conv_filters=null",
        "callbacks.mlflow_step_metrics.every_n_batches=1",
        f"paths.log_dir={tmp_path}",
        fast=False,
    )
    metrics = train(cfg)

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("visionlab").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["output_dir"] == str(tmp_path)
    expected = {k: str(v) for k, v in flat_hparams(cfg).items()}
    assert {k: run.data.params[k] for k in expected} == expected
    assert run.data.params["optimizer.lr"] == str(cfg.optimizer.lr)

    val_acc = client.get_metric_history(run.info.run_id, "val/acc")
    assert len(val_acc) == 2 and val_acc[-1].value == pytest.approx(metrics["val/acc"])  # one per epoch
    steps = client.get_metric_history(run.info.run_id, "train_step/loss")
    assert len(steps) == 6 and len({m.step for m in steps}) == 6  # one per batch, at its optimizer step
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 2

    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"checkpoints", "history.png"} <= files
    assert (tmp_path / "mlruns" / "artifacts").is_dir()
    (ckpt,) = client.list_artifacts(run.info.run_id, "checkpoints")
    best = next((tmp_path / "checkpoints").glob("epoch*.ckpt"))
    assert ckpt.path == f"checkpoints/{best.name}" and ckpt.file_size == best.stat().st_size
