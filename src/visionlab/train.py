"""Training entry point: compose the config, build data, model, task and trainer, fit,
then test the best checkpoint. `python scripts/train.py model=mlp optimizer=sgd`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from visionlab.callbacks import restored_best_weights
from visionlab.cli import hydra_entry
from visionlab.config import validate
from visionlab.io import atomic_write
from visionlab.task import ClassifierTask, Schedule

log = logging.getLogger("visionlab")


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, ClassifierTask, L.Trainer]:
    """Everything a run needs, built from the config without reading any data yet."""
    validate(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    net = instantiate(cfg.model, input_shape=list(datamodule.input_shape), num_classes=datamodule.num_classes)
    schedule = Schedule(**instantiate(cfg.scheduler))
    task = ClassifierTask(net, instantiate(cfg.optimizer), schedule, datamodule.num_classes, **cfg.task)
    task.model_config = OmegaConf.to_container(cfg.model, resolve=True)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return datamodule, task, trainer


def flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config flattened to dotted keys, for the loggers' hyperparameter tables."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if not str(k).startswith("_"):
                    walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node if isinstance(node, (int, float, str, bool)) else str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test; returns the final metrics (val/* of the last epoch, test/* of the best)."""
    datamodule, task, trainer = build(cfg)
    hparams = {k: v for k, v in flat_hparams(cfg).items() if k.split(".")[0] in
               ("data", "model", "optimizer", "scheduler", "task", "trainer", "seed")}
    for logger in trainer.loggers:
        logger.log_hyperparams(hparams)
    trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    checkpoint = trainer.checkpoint_callback if isinstance(trainer.checkpoint_callback, ModelCheckpoint) else None
    if cfg.get("test", True):
        best = checkpoint.best_model_path if checkpoint and checkpoint.best_model_path else None
        if restored_best_weights(trainer):
            best = None  # Keras' restore_best_weights: test the weights the module now holds
        results = trainer.test(task, datamodule=datamodule, ckpt_path=best, weights_only=False)
        metrics.update(results[0] if results else {})
    if trainer.is_global_zero:
        atomic_write(Path(trainer.default_root_dir) / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))
    return metrics


def _run(cfg: DictConfig) -> float:
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric", "val/acc"), float("nan"))


main = hydra_entry("train", _run)

if __name__ == "__main__":
    main()
