"""Training entry point: compose the config, build data, model, task and trainer, fit,
then test the best checkpoint. `python scripts/train.py model=mlp optimizer=sgd`."""

from __future__ import annotations

import inspect
import json
import logging
import platform
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ModelSummary, ProgressBar, WeightAveraging
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

import visionlab
from visionlab.app.cli import hydra_entry
from visionlab.app.config import CONF_DIR, ConfigError, validate
from visionlab.app.runlock import RunLock
from visionlab.data import InMemoryImageDataModule
from visionlab.training.callbacks import restored_best_weights
from visionlab.training.hook_cost import NoProfiler
from visionlab.training.resilience import PreemptionCheckpoint
from visionlab.training.task import ClassifierTask, Schedule
from visionlab.training.trainer_flags import TRAINER_CHECKS
from visionlab.training.trainer_state import callbacks_of
from visionlab.utils.checks import Check, integer, positive, required, under
from visionlab.utils.io import atomic_write
from visionlab.utils.limits import check_batch_fits
from visionlab.utils.threads import choose_threads
from visionlab.utils.torch_seams import cpu_has_native_bf16

log = logging.getLogger("visionlab")


def _group(name: str) -> Check:
    """A config group a run cannot do without (`~model` removes it)."""
    options = ", ".join(sorted(p.stem for p in (CONF_DIR / name).glob("*.yaml")))
    return Check(name, lambda v: isinstance(v, DictConfig), f"an option of the {name} group ({options})",
                 required=True)


# train.yaml's own keys and the Trainer's flags; its groups' components check theirs
# (visionlab.app.config.validate).
CHECKS = (
    *(_group(name) for name in ("data", "model", "optimizer", "scheduler", "task", "trainer")),
    *required(integer("seed", 0)),
    *under("trainer.", TRAINER_CHECKS),
    positive("tune.min_lr"), positive("tune.max_lr"), integer("tune.num_training", 3),
    integer("finetune.unfreeze_at_epoch", 0, "an integer >= 0, or null"),
    integer("threads", 1, "an integer >= 1, or null (visionlab chooses)"),
)

# Trainer flags that turn kinds of callbacks off (Lightning refuses the contradiction).
SWITCHES = (
    ("enable_progress_bar", ProgressBar),
    ("enable_model_summary", ModelSummary),
    ("enable_checkpointing", (ModelCheckpoint, PreemptionCheckpoint)),
)


def build(cfg: DictConfig) -> tuple[InMemoryImageDataModule, ClassifierTask, L.Trainer]:
    """Everything a run needs, built from the config without reading any data yet."""
    validate(cfg, CHECKS)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    net = instantiate(cfg.model, input_shape=list(datamodule.input_shape), num_classes=datamodule.num_classes)
    if cfg.get("channels_last"):
        net = net.to(memory_format=torch.channels_last)
    if cfg.get("compile"):
        net.compile()  # in place: state_dict keys stay those of the plain net
    schedule = Schedule(**instantiate(cfg.scheduler))
    check_run_length(cfg, schedule)
    # partial, then called: the net and factories never pass through OmegaConf
    task = instantiate(cfg.task, _partial_=True)(net=net, optimizer=instantiate(cfg.optimizer), scheduler=schedule,
                                                 num_classes=datamodule.num_classes,
                                                 channels_last=bool(cfg.get("channels_last")), seed=cfg.seed)
    task.model_config = OmegaConf.to_container(cfg.model, resolve=True)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    # non-mapping entries are options read by callbacks (logger.histograms), not loggers
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if isinstance(c, DictConfig) and c]
    # logger=none and trainer.enable_*=false win over the callbacks group
    switched_off: list[type | tuple[type, ...]] = [kind for flag, kind in SWITCHES if not cfg.trainer.get(flag, True)]
    switched_off += [LearningRateMonitor] if not loggers else []
    callbacks = [c for c in callbacks if not isinstance(c, tuple(switched_off))]
    # Lightning's no-op profiler, cheaper per hook call (training/hook_cost.py); a chosen profiler wins
    quiet = {} if cfg.trainer.get("profiler") else {"profiler": NoProfiler()}
    # plain dicts and lists: Lightning takes max_time={minutes: 5} as a dict, not a DictConfig
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, _convert_="partial", **quiet)
    if cfg.trainer.get("max_epochs") is None:  # Lightning's rule (loops.utilities._parse_loop_limits), said aloud
        bounded = cfg.trainer.get("max_steps", -1) != -1 or cfg.trainer.get("max_time") is not None
        log.info("trainer.max_epochs=null: Lightning's default applies: %s", "no epoch limit (trainer.max_steps or "
                 "trainer.max_time ends the run)" if bounded else "1000 epochs")
    warn_if_bf16_is_emulated(trainer)
    return datamodule, task, trainer


def check_run_length(cfg: DictConfig, schedule: Schedule) -> None:
    """A schedule sized by the run's length (one-cycle) needs a run with an end."""
    sized = schedule.factory is not None and "total_steps" in inspect.signature(schedule.factory).parameters
    epochs = cfg.trainer.get("max_epochs")
    # max_epochs=null is Lightning's 1000 epochs, unless max_time is set: then no epoch limit
    endless = epochs == -1 or (epochs is None and cfg.trainer.get("max_time") is not None)
    if sized and endless and cfg.trainer.get("max_steps", -1) == -1:
        raise ConfigError(f"trainer.max_epochs={'null' if epochs is None else epochs} with trainer.max_steps=-1 has "
                          "no length in steps, but the scheduler needs the run's length; set trainer.max_epochs "
                          "or trainer.max_steps, or another scheduler")


def warn_if_bf16_is_emulated(trainer: L.Trainer) -> None:
    """bfloat16 on a CPU without bfloat16 instructions is emulated: slower than float32, not faster."""
    if "bf16" not in str(trainer.precision) or not isinstance(trainer.accelerator, CPUAccelerator):
        return
    if not cpu_has_native_bf16():
        log.warning("trainer.precision=%s: this CPU has no native bfloat16 (AVX512-BF16 or AMX), so it is "
                    "emulated and usually slower; trainer.precision=32-true is likely faster here", trainer.precision)


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
        "versions": {"visionlab": visionlab.__version__, "torch": torch.__version__, "lightning": L.__version__,
                     "python": platform.python_version()},
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
    # a resumed run keeps the learning rate its optimizer state was saved with
    threads, reason = choose_threads(cfg.get("threads"))
    log.info("CPU threads: %d (%s)", threads, reason)
    finding = OmegaConf.select(cfg, "tune.lr_find", default=False) and not cfg.get("ckpt_path")
    tuned = None
    if finding:
        from visionlab.entrypoints.lr_find import tune_learning_rate  # lr_find builds with build() above

        tuned = tune_learning_rate(cfg)
    datamodule, task, trainer = build(cfg)
    if not cfg.get("compile"):  # a compiled net would compile for the estimate
        check_batch_fits(task.net, datamodule.input_shape, datamodule.batch_size, trainer.strategy.root_device)
    folder = Path(trainer.default_root_dir)
    lock = RunLock(folder).acquire() if trainer.is_global_zero else None
    try:
        return _fit_and_test(cfg, datamodule, task, trainer, tuned)
    finally:
        if lock is not None:
            lock.release()


def _fit_and_test(cfg: DictConfig, datamodule: L.LightningDataModule, task: ClassifierTask,
                  trainer: L.Trainer, tuned: dict[str, Any] | None) -> dict[str, float]:
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
    last = next((cb.best_model_path for cb in trainer.checkpoint_callbacks
                 if isinstance(cb, ModelCheckpoint) and cb.monitor is None and cb.best_model_path), None)
    if trainer.is_global_zero:
        log.warning("no validation ran, so no val/* metric: no best checkpoint and no early stopping; "
                    "testing the last weights (%s)", last or "in memory")
    return last


def _run(cfg: DictConfig) -> float:
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric", "val/acc"), float("nan"))


main = hydra_entry("train", _run, checks=CHECKS, resumes=True, locks=True)

if __name__ == "__main__":
    main()
