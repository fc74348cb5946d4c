"""`pip install .` gives one console command per command, named as its script (visionlab-lr-find
for scripts/lr_find.py): the same main() functions as scripts/*.py. (The wheel itself, conf/ inside it, was checked by hand:
docs/getting-started.md, "Console commands and Hydra's flags".)"""

from __future__ import annotations

import importlib
import re

import tomllib

from conftest import REPO

# console command -> script; the measuring tools (benchmark, speedrun, ...) have scripts only
SCRIPTS = {
    "train": "train",
    "evaluate": "evaluate",
    "predict": "predict",
    "export": "export",
    "report": "report",
    "serve": "serve",
    "lr-find": "lr_find",
    "scratch": "scratch",
}
TOOLS = {
    "benchmark",
    "stream_benchmark",
    "augment_cost",
    "speedrun",
    "loadtest",
    "gpu_check",
    "docs_check",
    "docs_tables",
}


def test_each_console_command_runs_the_main_of_its_script():
    commands = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(commands) == {f"visionlab-{name}" for name in SCRIPTS}
    for name, script in SCRIPTS.items():
        module, function = commands[f"visionlab-{name}"].split(":")
        imported = re.search(
            r"^from (visionlab\.[\w.]+) import main$", (REPO / "scripts" / f"{script}.py").read_text(), re.M
        )
        assert imported and imported.group(1) == module
        assert callable(getattr(importlib.import_module(module), function))


def test_every_script_is_a_command_or_a_tool():
    scripts = {p.stem for p in (REPO / "scripts").glob("*.py")}
    assert scripts == set(SCRIPTS.values()) | TOOLS
    for tool in TOOLS - {"gpu_check", "loadtest"}:  # gpu_check drives the scripts; loadtest is serve's
        source = (REPO / "scripts" / f"{tool}.py").read_text()
        assert re.search(rf"^from visionlab\.tools\.{tool} import main$", source, re.M), tool
