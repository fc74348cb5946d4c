"""Training entry point: compose and check the config, then the run of visionlab.app.fit
(build data, model, task and trainer, fit, test the best checkpoint).
`python scripts/train.py model=mlp optimizer=sgd`."""

from __future__ import annotations

from omegaconf import DictConfig

from visionlab.app.assemble import CHECKS
from visionlab.app.cli import hydra_entry
from visionlab.app.fit import train


def _run(cfg: DictConfig) -> float:
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric", "val/acc"), float("nan"))


main = hydra_entry("train", _run, checks=CHECKS, resumes=True, locks=True)

if __name__ == "__main__":
    main()
