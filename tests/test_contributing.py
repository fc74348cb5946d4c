"""CONTRIBUTING.md against the tree: its model recipe, followed in a copy of src/ and conf/,
adds a model that trains and checks its own arguments; every path it names exists."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

from conftest import FAST, REPO

GUIDE = REPO / "CONTRIBUTING.md"
NEW = re.compile(r"\bNAME\b")  # a placeholder: a file that a recipe creates


def section(title: str) -> str:
    text = GUIDE.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def recipe_files(title: str) -> dict[str, str]:
    """The files a recipe writes: its code blocks whose first line is `# path`."""
    blocks = re.findall(r"```(?:python|yaml)\n# (\S+)\n(.*?)```", section(title), re.S)
    return {path: body for path, body in blocks}


def test_the_model_recipe_adds_a_model_that_trains_and_checks_its_arguments(tmp_path):
    files = recipe_files("Add a model")
    assert sorted(files) == ["conf/model/tiny.yaml", "src/visionlab/models/tiny.py"]
    tree = tmp_path / "tree"
    for folder in ("src", "conf", "scripts"):
        shutil.copytree(REPO / folder, tree / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for path, body in files.items():
        assert not (REPO / path).exists() and (REPO / path).parent.is_dir(), path
        (tree / path).write_text(body)

    def train(*overrides: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                str(tree / "scripts" / "train.py"),
                "model=tiny",
                *FAST,
                "trainer.fast_dev_run=true",
                f"paths.log_dir={tmp_path / 'outputs'}",
                f"hydra.run.dir={tmp_path / 'run'}",
                *overrides,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env={"PYTHONPATH": str(tree / "src"), "OMP_NUM_THREADS": "1"},
        )

    bad = train("model.width=0")
    assert bad.returncode == 2, bad.stderr[-2000:]
    assert bad.stderr.strip().splitlines()[-1] == "error: model.width=0 is not allowed; expected an integer >= 1"
    assert not (tmp_path / "run").exists()
    good = train("model.width=8")
    assert good.returncode == 0, good.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train/loss"] > 0 and 0 <= metrics["val/acc"] <= 1
    saved = (tmp_path / "run" / ".hydra" / "config.yaml").read_text()
    assert "_target_: visionlab.models.tiny.Tiny" in saved and "width: 8" in saved


def test_every_path_the_guide_names_is_in_the_tree():
    named = set(re.findall(r"`((?:src|conf|tests|scripts)/[\w./-]+)`", GUIDE.read_text()))
    recipes = set(recipe_files("Add a model"))
    assert len(named) > 15
    missing = sorted(
        p for p in named - recipes if not (REPO / p).exists() and not (NEW.search(p) and (REPO / p).parent.is_dir())
    )
    assert not missing


def test_the_pre_commit_hooks_run_what_make_lint_runs():
    """.pre-commit-config.yaml's local hooks call the venv's tools with make lint's commands."""
    import yaml

    hooks = [
        h for repo in yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())["repos"] for h in repo["hooks"]
    ]
    lint = re.search(r"^lint:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), re.M)
    assert lint
    recipe = [line.strip().removeprefix("$(PY) -m ").split()[:2] for line in lint.group(1).splitlines()]
    entries = [h["entry"].split()[:2] for h in hooks]
    assert [e if e[0] == "ruff" else e[:1] for e in entries] == [r if r[0] == "ruff" else r[:1] for r in recipe]
    assert all(h["language"] == "system" for h in hooks)  # the pinned tools of the venv, nothing fetched
    assert "pre-commit install" in GUIDE.read_text()
