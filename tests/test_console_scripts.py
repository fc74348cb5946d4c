"""`pip install .` gives visionlab-train, -eval, -predict, -export, -report and -serve: the same
main() functions as scripts/*.py. (The wheel itself, conf/ inside it, was checked by hand:
docs/getting-started.md, "Console commands and Hydra's flags".)"""

from __future__ import annotations

import importlib
import re

import tomllib

from conftest import REPO

SCRIPTS = {"train": "train", "eval": "eval", "predict": "predict", "export": "export", "report": "report",
           "serve": "serve"}


def test_each_console_command_runs_the_main_of_its_script():
    commands = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(commands) == {f"visionlab-{name}" for name in SCRIPTS}
    for name, script in SCRIPTS.items():
        module, function = commands[f"visionlab-{name}"].split(":")
        imported = re.search(r"^from (visionlab\.[\w.]+) import main$", (REPO / "scripts" / f"{script}.py").read_text(), re.M)
        assert imported and imported.group(1) == module
        assert callable(getattr(importlib.import_module(module), function))
