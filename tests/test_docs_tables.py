"""README.md's figures are generated from results files (visionlab.tools.docs_tables), not typed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visionlab.tools import docs_tables
from visionlab.tools.docs_tables import END, PYTEST_SUMMARY, START, duration, figures_block, replace_block


def test_readme_figures_block_is_what_the_results_files_say() -> None:
    text = docs_tables.README.read_text()
    assert replace_block(text, figures_block()) == text, "run python scripts/docs_tables.py"
    assert docs_tables.main(["--check"]) == 0


def test_block_follows_the_files(tmp_path: Path) -> None:
    make = json.loads(docs_tables.MAKE_RESULTS.read_text())
    make["make_train"].update(test_acc=0.5, seconds=61, date="2030-01-02", hardware="Some CPU")
    (tmp_path / "make.json").write_text(json.dumps(make))
    speedrun = docs_tables.speedrun_result(docs_tables.SPEEDRUN_DIR)
    speedrun["summary"]["test_acc_mean"] = 0.25
    (tmp_path / "speedrun_cpu-20300102.json").write_text(json.dumps(speedrun))
    block = figures_block(tmp_path / "make.json", tmp_path)
    assert "test accuracy 0.5000 | 1 min 1 s in all | 2030-01-02, Some CPU |" in block
    assert "test accuracy 0.2500 mean" in block
    with pytest.raises(FileNotFoundError, match="speedrun_cpu"):
        figures_block(tmp_path / "make.json", tmp_path / "empty")


@pytest.mark.parametrize("text", ["no markers", f"{END}\n{START}\n", f"{START}\n{START}\n{END}\n"])
def test_replace_block_needs_one_pair_of_markers(text: str) -> None:
    with pytest.raises(ValueError, match="figures:start"):
        replace_block(text, "x\n")


def test_replace_block_keeps_the_rest() -> None:
    assert replace_block(f"a\n{START}\nold\n{END}\nb\n", "new\n") == f"a\n{START}\nnew\n{END}\nb\n"


@pytest.mark.parametrize(
    ("seconds", "text"), [(180.4, "3 min 0 s"), (260, "4 min 20 s"), (59.6, "1 min 0 s"), (7, "7 s")]
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize(
    ("line", "found"),
    [
        ("810 passed, 12 skipped, 3 warnings in 260.12s (0:04:20)", ("810", "12", "260.12")),
        ("5 passed in 1.50s", ("5", None, "1.50")),
    ],
)
def test_pytest_summary(line: str, found: tuple[str | None, ...]) -> None:
    match = PYTEST_SUMMARY.search(line)
    assert match is not None and match.groups() == found
