"""A training run from a checked config: build it (visionlab.app.assemble), fit, then test
the best checkpoint, with run_info.json and metrics.json in its folder. `scripts/train.py`,
visionlab.train and the speedrun all run this."""

from __future__ import annotations

import json
import logging
import platform
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, WeightAveraging
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

import visionlab
from visionlab.app.assemble import build
from visionlab.app.runlock import RunLock
from visionlab.training.callbacks import restored_best_weights
from visionlab.training.task import ClassifierTask
from visionlab.training.trainer_state import callbacks_of
from visionlab.utils.io import atomic_write
from visionlab.utils.limits import check_batch_fits
from visionlab.utils.threads import choose_threads

log = logging.getLogger("visionlab")


RESTORED_BEST = "restored_best.ckpt"  # early stopping's restored weights, as tested
HPARAM_KEYS = ("data", "model", "optimizer", "scheduler", "task", "trainer", "seed")


def flat_hparams(cfg: DictConfig, keys: tuple[str, ...] = HPARAM_KEYS) -> dict[str, Any]:
    """The resolved config under `keys`, flattened to dotted keys for hyperparameter tables."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if not str(k).startswith("_"):
                    walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node if isinstance(node, (int, float, str, bool)) else str(node)

    for key in keys:
        if key in cfg:
            node = cfg[key]
            walk(OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node, f"{key}.")
    return out


def run_info(cfg: DictConfig) -> dict[str, Any]:
    """What reproducing this run needs beyond its config: seed, versions, command."""
    return {
        "seed": cfg.seed,
        "versions": {
            "visionlab": visionlab.__version__,
            "torch": torch.__version__,
            "lightning": L.__version__,
            "python": platform.python_version(),
        },
        "command": " ".join(sys.argv),
        "machine": f"{platform.node()} ({platform.machine()}, {torch.get_num_threads()} threads)",
    }


def record_run_info(folder: Path, cfg: DictConfig, extra: dict[str, Any]) -> None:
    """run_info.json: written when a run starts; a resume adds itself to `resumes`."""
    path, info = folder / "run_info.json", {**run_info(cfg), **extra}
    if cfg.get("ckpt_path") and path.is_file():
        try:
            first = json.loads(path.read_text())
        except ValueError:
            first = None
        if isinstance(first, dict):
            first.setdefault("resumes", []).append({**info, "ckpt_path": str(cfg.ckpt_path)})
            info = first
    atomic_write(path, json.dumps(info, indent=2))


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test; returns the final metrics (val/* of the last epoch, test/* of the best)."""
    threads, reason = choose_threads(cfg.get("threads"))
    log.info("CPU threads: %d (%s)", threads, reason)
    datamodule, task, trainer = run = build(cfg)
    if not cfg.get("compile"):  # a compiled net would compile for the estimate
        check_batch_fits(task.net, datamodule.input_shape, datamodule.batch_size, trainer.strategy.root_device)
    folder = Path(trainer.default_root_dir)
    lock = RunLock(folder).acquire() if trainer.is_global_zero else None
    try:
        return _fit_and_test(cfg, datamodule, task, trainer, run.lr_find)
    finally:
        if lock is not None:
            lock.release()


def _fit_and_test(
    cfg: DictConfig,
    datamodule: L.LightningDataModule,
    task: ClassifierTask,
    trainer: L.Trainer,
    tuned: dict[str, Any] | None,
) -> dict[str, float]:
    folder = Path(trainer.default_root_dir)
    if trainer.is_global_zero:
        record_run_info(folder, cfg, {"lr_find": tuned} if tuned else {})
    hparams = flat_hparams(cfg)
    for logger in trainer.loggers:
        logger.log_hyperparams(hparams)
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    except SIGTERMException:
        raise SystemExit(143) from None  # PreemptionCheckpoint saved last.ckpt
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    tested: dict[str, str] = {}
    checkpoint = trainer.checkpoint_callback if isinstance(trainer.checkpoint_callback, ModelCheckpoint) else None
    if cfg.get("test", True):
        best = checkpoint.best_model_path if checkpoint and checkpoint.best_model_path else None
        validated = any(str(k).startswith("val/") for k in trainer.callback_metrics)
        if best is None and not validated:
            best = last_checkpoint_to_test(trainer)
        if restored_best_weights(trainer):
            # Keras' restore_best_weights: the module holds the best epoch's weights; saved, so
            # that what is tested is a file evaluate can reproduce
            best = str(folder / "checkpoints" / RESTORED_BEST)
            trainer.save_checkpoint(best, weights_only=True)
        # Lightning's WeightAveraging, still holding the fit's average, would load a checkpoint's
        # raw weights (current_model_state) to test: test its state_dict, the averaged weights
        callbacks = callbacks_of(trainer)
        callbacks[:] = [c for c in callbacks if not isinstance(c, WeightAveraging)]
        results = trainer.test(task, datamodule=datamodule, ckpt_path=best, weights_only=True)
        metrics.update(results[0] if results else {})
        tested = {"test/ckpt_path": best} if best else {}
    if trainer.is_global_zero:
        atomic_write(folder / "metrics.json", json.dumps({**metrics, **tested}, indent=2, sort_keys=True))
    return metrics


def last_checkpoint_to_test(trainer: L.Trainer) -> str | None:
    """No validation ran (trainer.limit_val_batches=0, data.val_size=0, or max_steps / max_time
    ended the run first), so nothing chose a best checkpoint: the last one is tested, loudly."""
    last = next(
        (
            cb.best_model_path
            for cb in trainer.checkpoint_callbacks
            if isinstance(cb, ModelCheckpoint) and cb.monitor is None and cb.best_model_path
        ),
        None,
    )
    if trainer.is_global_zero:
        log.warning(
            "no validation ran, so no val/* metric: no best checkpoint and no early stopping; "
            "testing the last weights (%s)",
            last or "in memory",
        )
    return last
