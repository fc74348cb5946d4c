"""Hyperparameter search on Optuna: the search space read from YAML, samplers and pruners by
name, a study kept in a file under the sweep folder (so a stopped search continues), and
the per-epoch pruning callback of a trial.

The Hydra side (`python scripts/train.py -m hparams_search=NAME`) is the sweeper plugin in
`hydra_plugins/visionlab_optuna_sweeper`; it calls `run_search` below. Each trial is one
training run in job folder SWEEP/<trial number>.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState
from optuna_integration import PyTorchLightningPruningCallback

from visionlab.app.cli import one_line
from visionlab.app.config import CONF_DIR, ConfigError
from visionlab.app.optuna_seams import (
    mark_failed,
    pruned_trial,
    set_stored_user_attr,
    stored_user_attrs,
    trial_of_number,
)
from visionlab.utils.io import atomic_write

log = logging.getLogger("visionlab")

SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,  # needs the cmaes package; categorical params are sampled at random
    "grid": optuna.samplers.GridSampler,
}
PRUNERS: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "none": optuna.pruners.NopPruner,
}
REASON = "fail_reason"  # user attr of a FAIL trial: one line saying why
PRUNED_AT = "pruned_at_epoch"  # user attr set by the pruning callback
OVERRIDES = "overrides"  # user attr: the trial's command-line overrides
INTERRUPTED = "interrupted"  # user attr of a trial whose search was killed while it ran
BEST_FILE = "best.yaml"
RESULTS_FILE = "optimization_results.yaml"


# --- the search space -------------------------------------------------------------------


def _override_value(value: Any) -> Any:
    """A categorical choice as Optuna stores it: lists become their override text `[16,32]`."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(_override_value(v)) for v in value) + "]"
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ConfigError(f"choice {value!r} is not allowed; expected numbers, strings, booleans or lists of them")


def _number(key: str, spec: Mapping[str, Any], field: str, kind: type) -> Any:
    value = spec.get(field)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or isinstance(value, int))
    if not ok:
        hint = " (YAML reads 1e-4 as text: write 1.0e-4)" if isinstance(value, str) else ""
        raise ConfigError(
            f"hydra.sweeper.params.{key}.{field}={value!r} is not allowed; "
            f"expected {'a number' if kind is float else 'an integer'}{hint}"
        )
    return kind(value)


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested keys (`optimizer: {lr: SPEC}`, as command-line overrides make them) -> `optimizer.lr`."""
    flat: dict[str, Any] = {}
    for key, spec in params.items():
        if isinstance(spec, Mapping) and "type" not in spec and spec:
            flat.update(_flatten(spec, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = spec
    return flat


def parse_space(params: Mapping[str, Any]) -> dict[str, BaseDistribution]:
    """`{key: {type: float|int|categorical, ...}}` -> Optuna distributions, one line per mistake.

    float: low, high, log (default false), step; int: low, high, log, step; categorical: choices.
    Keys are config keys, nested (`optimizer: {lr: ...}`) or dotted (`optimizer.lr: ...`).
    """
    space: dict[str, BaseDistribution] = {}
    for key, spec in _flatten(params).items():
        if not isinstance(spec, Mapping) or spec.get("type") not in ("float", "int", "categorical"):
            raise ConfigError(
                f"hydra.sweeper.params.{key}={spec!r} is not allowed; expected a mapping with "
                "type: float (low, high, log, step), int (low, high, log, step) or categorical (choices)"
            )
        kind = spec["type"]
        try:
            if kind == "categorical":
                choices = spec.get("choices")
                if not isinstance(choices, Sequence) or isinstance(choices, str) or not choices:
                    raise ConfigError(
                        f"hydra.sweeper.params.{key}.choices={choices!r} is not allowed; expected a non-empty list"
                    )
                space[key] = CategoricalDistribution([_override_value(c) for c in choices])
            else:
                number = float if kind == "float" else int
                low, high = _number(key, spec, "low", number), _number(key, spec, "high", number)
                step = _number(key, spec, "step", number) if spec.get("step") is not None else None
                log = bool(spec.get("log", False))
                space[key] = (
                    FloatDistribution(low, high, log=log, step=step or None)
                    if kind == "float"
                    else IntDistribution(low, high, log=log, step=step or 1)
                )
        except ValueError as err:
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"hydra.sweeper.params.{key}: {' '.join(str(err).split())}") from None
    if not space:
        raise ConfigError("hydra.sweeper.params is empty; name at least one parameter to search")
    return space


def grid_of(space: Mapping[str, BaseDistribution]) -> dict[str, list[Any]]:
    """Every value of each parameter, for the grid sampler (floats need a step)."""
    grid: dict[str, list[Any]] = {}
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            grid[key] = list(dist.choices)
        elif not isinstance(dist, (FloatDistribution, IntDistribution)) or dist.step is None or dist.log:
            raise ConfigError(
                f"hydra.sweeper.params.{key}: the grid sampler needs categorical or int params, "
                "or floats with a step and no log"
            )
        else:
            count = int(round((dist.high - dist.low) / dist.step)) + 1
            grid[key] = [dist.low + i * dist.step for i in range(count)]
    return grid


def trial_overrides(params: Mapping[str, Any]) -> list[str]:
    return [f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}" for key, value in params.items()]


# --- samplers, pruners and the study file -----------------------------------------------


def make_sampler(
    name: str, seed: int | None, options: Mapping[str, Any], space: Mapping[str, BaseDistribution]
) -> optuna.samplers.BaseSampler:
    """The sampler `name`, with its keyword arguments from `options[name]` (if any)."""
    if name not in SAMPLERS:
        raise ConfigError(f"hydra.sweeper.sampler.name={name!r} is not allowed; expected one of {', '.join(SAMPLERS)}")
    kwargs = dict(options.get(name) or {})
    if name == "grid":
        return _build("sampler", name, _AskTellGrid, grid_of(space), seed=seed, **kwargs)
    return _build("sampler", name, SAMPLERS[name], seed=seed, **kwargs)


def _build(kind: str, name: str, cls: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return cls(*args, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"hydra.sweeper.{kind}.options.{name}: {' '.join(str(err).split())}") from None


class _AskTellGrid(optuna.samplers.GridSampler):
    """GridSampler stops `study.optimize` when the grid is used up; under ask-and-tell that
    call fails, so here the search itself caps the trials at the grid's size."""

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        return None


def make_pruner(name: str | None, options: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    """The pruner `name` (None: no pruning), with its keyword arguments from `options[name]`."""
    name = name or "none"
    if name not in PRUNERS:
        raise ConfigError(f"hydra.sweeper.pruner.name={name!r} is not allowed; expected one of {', '.join(PRUNERS)}")
    return _build("pruner", name, PRUNERS[name], **dict(options.get(name) or {}))


def storage_url(storage: str) -> str | optuna.storages.BaseStorage:
    """A URL as given; a path ending in .db/.sqlite3 as SQLite, any other path as a journal file."""
    if "://" in storage:
        return storage
    path = Path(storage).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".db", ".sqlite", ".sqlite3"):
        return f"sqlite:///{path}"
    return JournalStorage(JournalFileBackend(str(path)))


def counted(trial: FrozenTrial) -> bool:
    """Trials that count towards n_trials: finished ones, not those cut off by a kill."""
    return trial.state.is_finished() and not trial.user_attrs.get(INTERRUPTED)


def recover_interrupted(study: optuna.Study, sweep_dir: Path) -> int:
    """Trials left RUNNING by a killed search become FAIL (with a reason and an error.txt in
    their folder for the report) and their parameters are queued to be tried again."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        reason = "interrupted: the search stopped while this trial ran; " + (
            "its parameters are tried again" if trial.params else "it had no parameters yet"
        )
        set_stored_user_attr(study, trial, REASON, reason)
        set_stored_user_attr(study, trial, INTERRUPTED, True)
        mark_failed(study, trial)
        if trial.params:
            study.enqueue_trial(trial.params, skip_if_exists=False)
        if (sweep_dir / str(trial.number)).is_dir():
            atomic_write(sweep_dir / str(trial.number) / "error.txt", f"error: {reason}\n")
        log.warning("search: trial %d was interrupted; marked FAIL, queued again", trial.number)
    return len(stale)


# --- one trial's pruning callback -------------------------------------------------------


def current_trial(hydra_cfg: Any) -> optuna.Trial | None:
    """The Optuna trial a job runs for (its job number is the trial number), or None outside a search."""
    from hydra.types import RunMode

    sweeper: Any = hydra_cfg.get("sweeper") or {}
    searching = str(sweeper.get("_target_", "")).startswith("hydra_plugins.visionlab_optuna_sweeper")
    if hydra_cfg.mode != RunMode.MULTIRUN or not searching:
        return None
    pruner = make_pruner(sweeper.pruner.name, sweeper.pruner.options)  # the study file does not keep it
    study = optuna.load_study(study_name=sweeper.study_name, storage=storage_url(sweeper.storage), pruner=pruner)
    return trial_of_number(study, hydra_cfg.job.num)


class OptunaPruning(Callback):
    """Reports `monitor` to the trial after every validation and stops a trial Optuna prunes.

    Optuna's PyTorchLightningPruningCallback does the reporting and the pruning decision; it
    raises TrialPruned inside `fit`, which our entry point would record as a crash. Here the
    trial instead stops at the end of that epoch (tested and reported like any run) and is
    marked PRUNED by the search. Does nothing outside a search.
    """

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.inner: PyTorchLightningPruningCallback | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        from hydra.core.hydra_config import HydraConfig

        if stage == "fit" and HydraConfig.initialized() and (trial := current_trial(HydraConfig.get())):
            self.inner = PyTorchLightningPruningCallback(trial, self.monitor)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.inner:
            self.inner.on_fit_start(trainer, pl_module)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.inner:
            return
        try:
            self.inner.on_validation_end(trainer, pl_module)
        except optuna.TrialPruned:
            pruned_trial(self.inner).set_user_attr(PRUNED_AT, pl_module.current_epoch)
            trainer.should_stop = True
            log.info("search: trial pruned at epoch %d", pl_module.current_epoch)


# --- the search loop --------------------------------------------------------------------


@dataclass
class Outcome:
    """What a launched job gave back: its value, or the exception that ended it."""

    value: Any = None
    error: BaseException | None = None


def tell(study: optuna.Study, trial: optuna.Trial, outcome: Outcome) -> None:
    """Record one finished job: COMPLETE, PRUNED (by the callback), or FAIL with one line why."""
    if outcome.error is not None:
        reason = f"{type(outcome.error).__name__}: {one_line(outcome.error)}"
    elif not isinstance(outcome.value, (int, float)) or not math.isfinite(outcome.value):
        reason = f"the trial's metric is {outcome.value!r}, not a finite number (NaN loss?)"
    elif PRUNED_AT in stored_user_attrs(study, trial):  # set by the job, maybe elsewhere
        study.tell(trial, state=TrialState.PRUNED)
        return
    else:
        study.tell(trial, float(outcome.value))
        return
    trial.set_user_attr(REASON, reason)
    study.tell(trial, state=TrialState.FAIL)
    log.warning("search: trial %d failed: %s", trial.number, reason)


def run_search(
    study: optuna.Study,
    space: Mapping[str, BaseDistribution],
    n_trials: int,
    n_jobs: int,
    fixed: Sequence[str],
    launch: Callable[[list[list[str]], int], list[Outcome]],
) -> None:
    """Ask, launch and tell until `n_trials` trials are finished (those of earlier runs included)."""
    while (remaining := n_trials - sum(counted(t) for t in study.get_trials(deepcopy=False))) > 0:
        trials = [study.ask(dict(space)) for _ in range(min(n_jobs, remaining))]
        numbers = [t.number for t in trials]
        if numbers != list(range(numbers[0], numbers[0] + len(numbers))):
            raise RuntimeError(
                f"search: trial numbers {numbers} are not consecutive; is another search writing to the same study?"
            )
        batch = []
        for trial in trials:
            overrides = [*fixed, *trial_overrides(trial.params)]
            trial.set_user_attr(OVERRIDES, overrides)
            batch.append(overrides)
        for trial, outcome in zip(trials, launch(batch, numbers[0])):
            tell(study, trial, outcome)


def write_best(study: optuna.Study, sweep_dir: Path, metric: str) -> Path | None:
    """The best trial as SWEEP/best.yaml (a primary config: `--config-dir SWEEP --config-name best`)
    and SWEEP/optimization_results.yaml; None when no trial completed."""
    try:
        best = study.best_trial
    except ValueError:
        log.warning("search: no trial completed, so no %s", BEST_FILE)
        return None
    overrides = [o for o in best.user_attrs.get(OVERRIDES, []) if not o.lstrip("+~").startswith("hydra.")]
    groups = [o for o in overrides if _is_group(o)]
    values = [o for o in overrides if not _is_group(o)]
    header = (
        f"# Best trial {best.number} of study {study.study_name}: {metric}={best.value:.6g}.\n"
        f"# Train it again:  python scripts/train.py --config-dir {sweep_dir} --config-name best\n"
    )
    body = {
        "defaults": ["train", *({f"override {g.split('=', 1)[0]}": g.split("=", 1)[1]} for g in groups), "_self_"],
        "hydra": {"mode": "RUN"},
    }
    merged = OmegaConf.merge(body, OmegaConf.from_dotlist(values))
    path = sweep_dir / BEST_FILE
    atomic_write(path, header + yaml.safe_dump(OmegaConf.to_container(merged), sort_keys=False))
    atomic_write(
        sweep_dir / RESULTS_FILE,
        yaml.safe_dump(
            {
                "best_trial": best.number,
                "best_value": best.value,
                "best_params": best.params,
                "metric": metric,
                "states": {s.name: sum(t.state == s for t in study.trials) for s in TrialState},
            },
            sort_keys=False,
        ),
    )
    log.info("search: best trial %d (%s=%.6g) -> %s", best.number, metric, best.value, path)
    return path


def _is_group(override: str) -> bool:
    key = override.split("=", 1)[0]
    return (CONF_DIR / key.replace(".", "/")).is_dir()
