"""The Hydra side of visionlab.app.search: compose each trial as a job of the multirun and hand
the study the results. Hydra finds this module by scanning the `hydra_plugins` namespace."""

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, cast

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


@dataclass
class SamplerConf:
    name: str = "tpe"  # tpe | random | cmaes | grid
    seed: Optional[int] = None
    options: Dict[str, Any] = field(default_factory=dict)  # {sampler name: its keyword arguments}


@dataclass
class PrunerConf:
    name: str = "median"  # median | percentile | hyperband | successive_halving | threshold | none
    options: Dict[str, Any] = field(default_factory=dict)  # {pruner name: its keyword arguments}


@dataclass
class VisionlabOptunaSweeperConf:
    _target_: str = "hydra_plugins.visionlab_optuna_sweeper.sweeper.VisionlabOptunaSweeper"
    direction: str = "maximize"
    study_name: str = "visionlab"
    storage: str = "${hydra.sweep.dir}/optuna.db"  # a path (.db: SQLite, else a journal file) or a URL
    n_trials: int = 20
    n_jobs: int = 1  # trials per batch (in parallel with launcher=joblib)
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    params: Dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper", name="visionlab_optuna", node=VisionlabOptunaSweeperConf, provider="visionlab"
)


class VisionlabOptunaSweeper(Sweeper):
    """Runs `n_trials` trials of an Optuna study stored under the sweep folder; a second run
    of the same command continues the study."""

    def __init__(self, **conf: Any) -> None:
        self.conf = OmegaConf.create(conf)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: List[str]) -> None:
        from visionlab.app.config import ConfigError

        try:
            self._sweep(arguments)
        except ConfigError as err:  # a bad search setting: one line before any trial, like bad input elsewhere
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    def _sweep(self, arguments: List[str]) -> None:
        import optuna

        from visionlab.app import search
        from visionlab.app.config import ConfigError
        from visionlab.app.hydra_seams import job_result

        conf = self.conf
        assert self.config is not None and self.launcher is not None, "Hydra calls setup() first"
        launcher = self.launcher
        sweeps = [o.input_line for o in OverridesParser.create().parse_overrides(arguments) if o.is_sweep_override()]
        if sweeps:
            raise ConfigError(
                f"{sweeps[0]}: a search takes its values from hydra.sweeper.params, not from sweeps on the command line"
            )
        if conf.direction not in ("maximize", "minimize"):
            raise ConfigError(
                f"hydra.sweeper.direction={conf.direction!r} is not allowed; expected maximize or minimize"
            )
        space = search.parse_space(cast(Dict[str, Any], OmegaConf.to_container(conf.params, resolve=True)))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        study = optuna.create_study(
            study_name=conf.study_name,
            storage=search.storage_url(conf.storage),
            direction=conf.direction,
            pruner=search.make_pruner(conf.pruner.name, conf.pruner.options),
            load_if_exists=True,
        )
        earlier = len(study.trials)
        # a resumed search draws a new sequence: the same seed would repeat the first trials
        seed = None if conf.sampler.seed is None else conf.sampler.seed + earlier
        study.sampler = search.make_sampler(conf.sampler.name, seed, conf.sampler.options, space)
        search.recover_interrupted(study, sweep_dir)
        n_trials = conf.n_trials
        if conf.sampler.name == "grid":
            n_trials = min(n_trials, math.prod(len(v) for v in search.grid_of(space).values()))
        search.log.info(
            "search: study %s in %s, %d earlier trials, %d wanted", conf.study_name, conf.storage, earlier, n_trials
        )

        def launch(batch: List[List[str]], first: int) -> List["search.Outcome"]:
            self.validate_batch_is_legal(batch)
            returns = launcher.launch(batch, initial_job_idx=first)
            return [
                search.Outcome(value=job_result(r))
                if r.status == JobStatus.COMPLETED
                else search.Outcome(error=job_result(r))
                for r in returns
            ]

        search.run_search(study, space, n_trials, max(1, conf.n_jobs), arguments, launch)
        metric = OmegaConf.select(self.config, "optimized_metric", default="value")
        search.write_best(study, sweep_dir, metric)
