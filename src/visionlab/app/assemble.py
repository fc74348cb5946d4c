"""The run assembled in one place: the config's checks, and data, model, task, callbacks,
loggers and Trainer built from a composed config, without reading any data yet.

Every command that trains asks here (train, lr_find, the benchmark, visionlab.api), so a
run is built the same way whichever way in; the commands import no one another.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, ModelSummary, ProgressBar
from lightning.pytorch.utilities.seed import isolate_rng
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from visionlab.app.config import CONF_DIR, ConfigError
from visionlab.app.lr_finder import LRFindResult, find_lr, write_result
from visionlab.data import InMemoryImageDataModule
from visionlab.training.hook_cost import NoProfiler
from visionlab.training.resilience import PreemptionCheckpoint
from visionlab.training.task import ClassifierTask, Schedule
from visionlab.training.trainer_flags import TRAINER_CHECKS
from visionlab.utils.checks import Check, integer, positive, required, under
from visionlab.utils.torch_seams import cpu_has_native_bf16

log = logging.getLogger("visionlab")


def _group(name: str) -> Check:
    """A config group a run cannot do without (`~model` removes it)."""
    options = ", ".join(sorted(p.stem for p in (CONF_DIR / name).glob("*.yaml")))
    return Check(name, lambda v: isinstance(v, DictConfig), f"an option of the {name} group ({options})", required=True)


# train.yaml's own keys and the Trainer's flags; its groups' components check theirs
# (visionlab.app.config.validate).
CHECKS = (
    *(_group(name) for name in ("data", "model", "optimizer", "scheduler", "task", "trainer")),
    *required(integer("seed", 0)),
    *under("trainer.", TRAINER_CHECKS),
    positive("tune.min_lr"),
    positive("tune.max_lr"),
    integer("tune.num_training", 3),
    integer("finetune.unfreeze_at_epoch", 0, "an integer >= 0, or null"),
    integer("threads", 1, "an integer >= 1, or null (visionlab chooses)"),
)

# Trainer flags that turn kinds of callbacks off (Lightning refuses the contradiction).
SWITCHES = (
    ("enable_progress_bar", ProgressBar),
    ("enable_model_summary", ModelSummary),
    ("enable_checkpointing", (ModelCheckpoint, PreemptionCheckpoint)),
)


@dataclass
class Run:
    """What a run fits: unpacks as (datamodule, task, trainer). `lr_find`: what the
    learning-rate finder chose (tune.lr_find=true), for run_info.json."""

    datamodule: InMemoryImageDataModule
    task: ClassifierTask
    trainer: L.Trainer
    lr_find: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.datamodule, self.task, self.trainer))


def build(cfg: DictConfig) -> Run:
    """Everything a run needs, built once from a checked config (visionlab.app.config.validate
    with CHECKS ran where the config was composed). With tune.lr_find=true (a new run, not a
    resume) the learning-rate finder runs first on copies of the data and net, and
    cfg.optimizer.lr is set to its suggestion before the task is built."""
    datamodule, net = _data_and_net(cfg)
    tuned = tune_learning_rate(cfg, datamodule, net) if finds_lr(cfg) else None
    task = _task(cfg, net, datamodule)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    # non-mapping entries are options read by callbacks (logger.histograms), not loggers
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if isinstance(c, DictConfig) and c]
    # logger=none and trainer.enable_*=false win over the callbacks group
    switched_off: list[type | tuple[type, ...]] = [kind for flag, kind in SWITCHES if not cfg.trainer.get(flag, True)]
    switched_off += [LearningRateMonitor] if not loggers else []
    callbacks = [c for c in callbacks if not isinstance(c, tuple(switched_off))]
    trainer = _trainer(cfg, callbacks, loggers)
    if cfg.trainer.get("max_epochs") is None:  # Lightning's rule (loops.utilities._parse_loop_limits), said aloud
        bounded = cfg.trainer.get("max_steps", -1) != -1 or cfg.trainer.get("max_time") is not None
        log.info(
            "trainer.max_epochs=null: Lightning's default applies: %s",
            "no epoch limit (trainer.max_steps or trainer.max_time ends the run)" if bounded else "1000 epochs",
        )
    warn_if_bf16_is_emulated(trainer)
    return Run(datamodule, task, trainer, tuned)


def finds_lr(cfg: DictConfig) -> bool:
    """tune.lr_find=true on a new run: a resumed run keeps the learning rate its optimizer state was saved with."""
    return bool(OmegaConf.select(cfg, "tune.lr_find", default=False)) and not cfg.get("ckpt_path")


def _data_and_net(cfg: DictConfig) -> tuple[InMemoryImageDataModule, nn.Module]:
    """The DataModule (no data read yet) and the net, seeded by cfg.seed."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    net = instantiate(cfg.model, input_shape=list(datamodule.input_shape), num_classes=datamodule.num_classes)
    if cfg.get("channels_last"):
        net = net.to(memory_format=torch.channels_last)
    if cfg.get("compile"):
        net.compile()  # in place: state_dict keys stay those of the plain net
    return datamodule, net


def _task(cfg: DictConfig, net: nn.Module, datamodule: InMemoryImageDataModule) -> ClassifierTask:
    schedule = Schedule(**instantiate(cfg.scheduler))
    check_run_length(cfg, schedule)
    # partial, then called: the net and factories never pass through OmegaConf
    task = instantiate(cfg.task, _partial_=True)(
        net=net,
        optimizer=instantiate(cfg.optimizer),
        scheduler=schedule,
        num_classes=datamodule.num_classes,
        channels_last=bool(cfg.get("channels_last")),
        seed=cfg.seed,
    )
    task.model_config = OmegaConf.to_container(cfg.model, resolve=True)
    return task


def _trainer(cfg: DictConfig, callbacks: list[Callback], loggers: list[Any]) -> L.Trainer:
    # Lightning's no-op profiler, cheaper per hook call (training/hook_cost.py); a chosen profiler wins
    quiet = {} if cfg.trainer.get("profiler") else {"profiler": NoProfiler()}
    # plain dicts and lists: Lightning takes max_time={minutes: 5} as a dict, not a DictConfig
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, _convert_="partial", **quiet)


def find_learning_rate(cfg: DictConfig) -> tuple[LRFindResult, Path]:
    """scripts/lr_find.py: the finder on the data, model and optimizer of `cfg` (a train
    config), without its callbacks and loggers; the result and the run folder."""
    datamodule, net = _data_and_net(cfg)
    return _find(cfg, datamodule, net)


def _find(cfg: DictConfig, datamodule: InMemoryImageDataModule, net: nn.Module) -> tuple[LRFindResult, Path]:
    # copies, and the random state kept: the run trains from the same start as without the finder
    with isolate_rng():
        datamodule = copy.deepcopy(datamodule)
        task = _task(cfg, copy.deepcopy(net), datamodule)
        trainer = _trainer(cfg, [], [])  # the finder swaps callbacks out anyway
        return find_lr(datamodule, task, trainer, cfg.tune), Path(trainer.default_root_dir)


def tune_learning_rate(cfg: DictConfig, datamodule: InMemoryImageDataModule, net: nn.Module) -> dict[str, Any]:
    """For tune.lr_find=true: find, write the files, and set cfg.optimizer.lr to the
    suggestion (rounded to 3 digits) so everything built afterwards uses it."""
    result, out = _find(cfg, datamodule, net)
    write_result(result, out)
    lr = float(f"{result.suggestion:.3g}")
    previous = OmegaConf.select(cfg, "optimizer.lr")
    with open_dict(cfg):
        cfg.optimizer.lr = lr
    log.info("tune.lr_find: optimizer.lr=%g (was %s); lr_find.png and lr_find.json in %s", lr, previous, out)
    return {"optimizer.lr": lr, "configured_lr": previous, "suggestion": result.suggestion}


def check_run_length(cfg: DictConfig, schedule: Schedule) -> None:
    """A schedule sized by the run's length (one-cycle) needs a run with an end."""
    sized = schedule.factory is not None and "total_steps" in inspect.signature(schedule.factory).parameters
    epochs = cfg.trainer.get("max_epochs")
    # max_epochs=null is Lightning's 1000 epochs, unless max_time is set: then no epoch limit
    endless = epochs == -1 or (epochs is None and cfg.trainer.get("max_time") is not None)
    if sized and endless and cfg.trainer.get("max_steps", -1) == -1:
        raise ConfigError(
            f"trainer.max_epochs={'null' if epochs is None else epochs} with trainer.max_steps=-1 has "
            "no length in steps, but the scheduler needs the run's length; set trainer.max_epochs "
            "or trainer.max_steps, or another scheduler"
        )


def warn_if_bf16_is_emulated(trainer: L.Trainer) -> None:
    """bfloat16 on a CPU without bfloat16 instructions is emulated: slower than float32, not faster."""
    if "bf16" not in str(trainer.precision) or not isinstance(trainer.accelerator, CPUAccelerator):
        return
    if not cpu_has_native_bf16():
        log.warning(
            "trainer.precision=%s: this CPU has no native bfloat16 (AVX512-BF16 or AMX), so it is "
            "emulated and usually slower; trainer.precision=32-true is likely faster here",
            trainer.precision,
        )
