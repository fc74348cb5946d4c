"""visionlab: image classifiers in PyTorch, trained with Lightning, configured with Hydra.

The Python API (visionlab.api) mirrors the scripts: `visionlab.train(overrides)`,
`visionlab.load_model(path)` and the LightningModule `visionlab.ClassifierTask`. They are
imported on first use, so `import visionlab` stays quick.
"""

from __future__ import annotations

import os
import sys
from typing import Any

# OpenMP threads that wait sleep instead of spinning, so a run on a busy machine degrades
# gracefully (visionlab.utils.threads). OpenMP reads this once, when torch loads it: set
# before any visionlab module imports torch; a value the user set wins.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
__all__ = ["ClassifierTask", "load_model", "train"]


def __getattr__(name: str) -> Any:
    if name in ("train", "load_model"):
        from visionlab import api

        return getattr(api, name)
    if name == "ClassifierTask":
        from visionlab.training.task import ClassifierTask

        return ClassifierTask
    raise AttributeError(f"module 'visionlab' has no attribute {name!r}")
