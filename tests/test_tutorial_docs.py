"""The tutorial (docs/tutorial/) is published in English and Portuguese: every page has its
twin, the twins give the same commands and show the same pictures, and the pictures exist
and stay small. Text only: no command runs here (the docs-command test runs them)."""

import re
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial"
ASSETS_LIMIT = 3 * 1024 * 1024
COMMANDS = re.compile(r"(<!-- not-run:[^\n]*-->\n)?```bash\n(.*?)```", re.S)
LINKS = re.compile(r"\]\((assets/[^)\s]+)\)")


def english_pages() -> list[Path]:
    return sorted(p for p in TUTORIAL.glob("*.md") if not p.name.endswith(".pt.md"))


def twin(page: Path) -> Path:
    return page.with_name(f"{page.stem}.pt.md")


def test_every_page_has_a_portuguese_twin_and_back() -> None:
    english = {p.stem for p in english_pages()}
    portuguese = {p.name.removesuffix(".pt.md") for p in TUTORIAL.glob("*.pt.md")}
    assert english, f"no pages in {TUTORIAL}"
    assert english == portuguese


@pytest.mark.parametrize("page", english_pages(), ids=lambda p: p.name)
def test_twins_give_the_same_commands_and_pictures(page: Path) -> None:
    english, portuguese = page.read_text(), twin(page).read_text()
    assert COMMANDS.findall(english) == COMMANDS.findall(portuguese)
    assert LINKS.findall(english) == LINKS.findall(portuguese)
    missing = [link for link in LINKS.findall(english) if not (TUTORIAL / link).is_file()]
    assert not missing, f"{page.name} links to missing assets: {missing}"


def test_assets_stay_small() -> None:
    size = sum(f.stat().st_size for f in (TUTORIAL / "assets").rglob("*") if f.is_file())
    assert size < ASSETS_LIMIT, f"docs/tutorial/assets holds {size / 2**20:.1f} MiB"
