"""The run is assembled in one place (visionlab.app.assemble): a run's config is composed
once and its parts built once, whichever way in, the learning-rate finder included."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl

import visionlab
import visionlab.app.fit as fit
from conftest import FAST, run_main
from visionlab.entrypoints.train import main as train_main

# the finder needs enough steps for a suggestion: the whole synthetic train split, one epoch
FIND = (
    "model=mlp",
    "model.hidden=[16]",
    "trainer.limit_train_batches=null",
    "tune.lr_find=true",
    "tune.num_training=15",
    "tune.min_lr=1e-4",
    "tune.max_lr=0.5",
)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often Hydra composes a config (its config loader, for Hydra's own runs and the
    compose API alike) and how often a run is built."""
    counts = {"compositions": 0, "builds": 0}

    def counting(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return original(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(
        ConfigLoaderImpl, "load_configuration", counting("compositions", ConfigLoaderImpl.load_configuration)
    )
    monkeypatch.setattr(fit, "build", counting("builds", fit.build))
    return counts


def _tuned(run: Path) -> None:
    info = json.loads((run / "run_info.json").read_text())
    assert info["lr_find"]["optimizer.lr"] == float(
        f"{json.loads((run / 'lr_find.json').read_text())['suggestion']:.3g}"
    )


def test_the_command_line_composes_a_run_once_and_builds_it_once(tmp_path: Path, counted: dict[str, int]) -> None:
    code, err = run_main(train_main, [*FAST, *FIND, f"hydra.run.dir={tmp_path / 'run'}"])
    assert code == 0, err
    assert counted == {"compositions": 1, "builds": 1}
    _tuned(tmp_path / "run")
    assert (tmp_path / "run" / ".hydra" / "config.yaml").is_file()  # Hydra's run, as before


def test_the_python_api_composes_a_run_once_and_builds_it_once(tmp_path: Path, counted: dict[str, int]) -> None:
    visionlab.train([*FAST, *FIND, f"hydra.run.dir={tmp_path / 'run'}"], root=tmp_path)
    assert counted == {"compositions": 1, "builds": 1}
    _tuned(tmp_path / "run")
