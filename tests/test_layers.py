"""The folders of src/visionlab are layers: each may import only the ones below it, and only
the top ones know Hydra. Read from the source (every import statement, those inside
functions too), so a lazy import cannot hide a wrong direction. Imports are absolute
(ruff's TID252 refuses relative ones), so the module names are as written."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "visionlab"

# layer -> the visionlab layers it may import (itself always)
MAY_IMPORT = {
    "utils": set(),
    "models": {"utils"},
    "data": {"utils"},
    "scratch": {"models", "utils"},
    "training": {"models", "data", "utils"},
    "app": {"training", "models", "data", "utils"},
    "serve": {"app", "training", "models", "data", "utils"},
    "entrypoints": {"app", "training", "models", "data", "scratch", "utils"},
    "tools": {"serve", "app", "training", "models", "data", "utils"},
}
KNOWS_NOT_HYDRA = ("utils", "models", "data", "scratch", "training")


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "visionlab" and len(parts) > 1 else None


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for each module `path` imports; `from visionlab import x` is visionlab.x."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [
                (node.lineno, f"visionlab.{alias.name}" if node.module == "visionlab" else node.module)
                for alias in node.names
            ]
    return found


def files(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


def test_the_scan_sees_imports_at_the_top_and_inside_functions():
    assert {"torch", "visionlab.training.checkpoint"} <= {m for _, m in imports(PACKAGE / "training" / "task.py")}
    lazy = [m for _, m in imports(PACKAGE / "serve" / "backends.py")]
    assert "visionlab.app.runs" in lazy  # imported inside a function
    assert "visionlab.api" in {m for _, m in imports(PACKAGE / "__init__.py")}  # from visionlab import api


@pytest.mark.parametrize("layer", sorted(MAY_IMPORT))
def test_each_layer_imports_only_the_layers_below_it(layer):
    assert files(layer), f"no modules in {layer}/"
    allowed = MAY_IMPORT[layer] | {layer}
    wrong = [
        f"{path.relative_to(PACKAGE)}:{line} imports {module}"
        for path in files(layer)
        for line, module in imports(path)
        if layer_of(module) is not None and layer_of(module) not in allowed
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("layer", KNOWS_NOT_HYDRA)
def test_only_the_top_layers_know_hydra(layer):
    wrong = [
        f"{path.relative_to(PACKAGE)}:{line} imports {module}"
        for path in files(layer)
        for line, module in imports(path)
        if module.split(".")[0] in ("hydra", "omegaconf")
    ]
    assert not wrong, "\n".join(wrong)


def test_no_command_imports_another():
    """What commands share lives below them (app/assemble.py builds every run): a command
    that imports another would make it a library, and loops follow."""
    wrong = [
        f"{path.relative_to(PACKAGE)}:{line} imports {module}"
        for path in files("entrypoints")
        for line, module in imports(path)
        if layer_of(module) == "entrypoints"
    ]
    assert not wrong, "\n".join(wrong)


def test_no_module_is_left_at_the_top_but_the_facade():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "api.py"]


def test_the_config_checker_knows_no_component():
    """Adding a model, dataset or callback edits no central table: app/config.py finds
    each component's checks through the config's _target_s and imports none of them."""
    layers = {layer_of(m) for _, m in imports(PACKAGE / "app" / "config.py")} - {None}
    assert layers == {"utils"}
