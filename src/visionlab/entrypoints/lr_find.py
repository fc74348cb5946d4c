"""Learning-rate finder: Lightning's Tuner.lr_find on the composed model and data
(visionlab.app.lr_finder), its suggestion saved as lr_find.png and lr_find.json in the
run folder.

`python scripts/lr_find.py [any train overrides]` prints the `optimizer.lr=` override to
use; `python scripts/train.py tune.lr_find=true` runs it first and trains with it.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from visionlab.app.assemble import CHECKS, find_learning_rate
from visionlab.app.cli import hydra_entry
from visionlab.app.lr_finder import write_result

log = logging.getLogger("visionlab")


def run(cfg: DictConfig) -> float:
    """scripts/lr_find.py: find, write, print the override; returns the suggestion."""
    result, out = find_learning_rate(cfg)
    write_result(result, out)
    print(f"optimizer.lr={result.suggestion:.3g}")
    log.info("Wrote lr_find.png and lr_find.json to %s", out)
    return result.suggestion


main = hydra_entry("lr_find", run, checks=CHECKS)

if __name__ == "__main__":
    main()
