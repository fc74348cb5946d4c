"""The documentation site builds strictly from this checkout, its generated reference says
what the code says, a broken link fails the build, and the pages render in a browser."""

from __future__ import annotations

import html
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from visionlab.tools import docs_check
from visionlab.tools.browser import chromium

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def page(site: Path, path: str) -> str:
    return (site / path / "index.html").read_text()


def test_the_site_builds_with_every_section_and_both_languages(site):
    for path in (
        "",
        "getting-started",
        "tutorial",
        "how-to/data",
        "reference/config",
        "reference/commands",
        "reference/api",
        "benchmarks",
        "benchmarks/leaderboard",
        "contributing",
        "pt",
        "pt/tutorial",
    ):
        assert (site / path / "index.html").is_file(), path
    assert 'lang="pt"' in page(site, "pt/tutorial")


def test_the_configuration_reference_is_the_yaml_and_the_checks(site):
    from visionlab.models.mlp import MLP
    from visionlab.training.trainer_flags import TRAINER_CHECKS

    config = html.unescape(page(site, "reference/config"))
    max_epochs = next(c for c in TRAINER_CHECKS if c.key == "max_epochs")
    assert max_epochs.allowed in config  # a Trainer flag's range, from trainer_flags.py
    assert all(check.allowed in config for check in MLP.CHECKS)  # a component's own CHECKS
    default = yaml.safe_load((ROOT / "conf" / "trainer" / "default.yaml").read_text())["max_epochs"]
    assert f"<code>max_epochs</code></td>\n<td><code>{default}</code>" in config
    for group in ("data", "model", "optimizer", "scheduler", "trainer", "experiment", "logger", "callbacks"):
        for option in (ROOT / "conf" / group).glob("*.yaml"):
            assert f"{group}={option.stem}" in config


def test_the_commands_reference_is_their_help(site):
    commands = html.unescape(page(site, "reference/commands"))
    for help_file in (ROOT / "conf" / "hydra" / "help").glob("*.yaml"):
        about = yaml.safe_load(help_file.read_text())["about"].replace("$$", "$")
        assert about.splitlines()[0] in commands, help_file.name
    assert (
        "usage: report.py [-h]" in commands
    )  # an argparse command's own --help, as python scripts/report.py prints it
    api = page(site, "reference/api")
    assert "load_model" in api and "ClassifierTask" in api  # mkdocstrings found the docstrings


@pytest.mark.parametrize(
    "markdown, complaint",
    [
        ("[gone](missing.md)", "missing.md"),
        ("[no such heading](other.md#nowhere)", "nowhere"),
        ("Fine.", 'not included in the "nav"'),
    ],
    ids=["broken link", "broken anchor", "page left out of the nav"],
)
def test_the_sites_validation_settings_fail_the_build(tmp_path, markdown, complaint, caplog):
    """Our mkdocs.yml's strict and validation settings, on a two-page site with one fault."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config
    from mkdocs.exceptions import Abort

    ours = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)  # no !!python tags: plain data
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text(f"# Home\n\n{markdown}\n")
    (docs / "other.md").write_text("# Other\n\n## Somewhere\n")
    (docs / "left_out.md").write_text("# Left out\n")
    nav = ["index.md", "other.md"] + (["left_out.md"] if "nav" not in complaint else [])
    config = {
        "site_name": "t",
        "docs_dir": str(docs),
        "site_dir": str(tmp_path / "site"),
        "nav": nav,
        "strict": ours["strict"] == "true",
        "validation": ours["validation"],
    }
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    with pytest.raises(Abort):
        build(load_config(str(tmp_path / "mkdocs.yml")))
    assert complaint in caplog.text


@pytest.mark.skipif(
    chromium() is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; `make test` tries)",
)
def test_the_home_page_and_a_tutorial_page_render_in_a_browser(site, tmp_path):
    seen = docs_check.screenshots(site, tmp_path)
    assert seen["home"] == ("visionlab", "visionlab")
    source = docs_check.pages(site)["tutorial"].strip("/") or "index"
    source = "tutorial/index" if source == "tutorial" else source
    for name, suffix in (("tutorial", ".md"), ("tutorial-pt", ".pt.md")):
        markdown = ROOT / "docs" / f"{source}{suffix}"
        if not markdown.is_file():  # the Portuguese page falls back to the English one
            markdown = ROOT / "docs" / f"{source}.md"
        heading = next(line[2:].strip() for line in markdown.read_text().splitlines() if line.startswith("# "))
        assert seen[name][1] == heading and seen[name][0] == f"{heading} - visionlab", (name, seen[name])
    assert all((tmp_path / f"{name}.png").stat().st_size > 10_000 for name in seen)


def test_the_leaderboard_is_the_table_of_its_result_files():
    """docs/benchmarks/leaderboard.md ends with what `scripts/speedrun.py table` makes of the
    JSON results beside it: a result added or edited without rewriting the table fails here."""
    import json

    from visionlab.tools.speedrun import leaderboard

    results = sorted((ROOT / "docs" / "benchmarks" / "speedrun").glob("*.json"))
    assert results
    table = leaderboard([json.loads(p.read_text()) for p in results])
    assert (ROOT / "docs" / "benchmarks" / "leaderboard.md").read_text().endswith(table), (
        "rewrite it: python scripts/speedrun.py table docs/benchmarks/speedrun/*.json --out docs/benchmarks/leaderboard.md"
    )
