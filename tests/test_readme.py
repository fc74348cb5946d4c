"""README.md is the short front page (#29): at most ~200 lines, and every relative link in it
opens a file of the repository, so its links into docs/ work on GitHub as in a checkout."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def relative_links(text: str) -> list[str]:
    return [target for target in LINK.findall(text) if "://" not in target]


def test_relative_links_open_files() -> None:
    links = relative_links(README.read_text())
    assert "docs/getting-started.md" in links and any(t.startswith("docs/how-to/") for t in links)
    missing = [target for target in links if not (REPO / target).is_file()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_link_pattern_reads_targets_without_anchors() -> None:
    text = "[a](docs/a.md) [b](docs/b.md#part) [c](https://example.org/x.md) [d](CONTRIBUTING.md)"
    assert relative_links(text) == ["docs/a.md", "docs/b.md", "CONTRIBUTING.md"]


def test_readme_is_short() -> None:
    assert len(README.read_text().splitlines()) <= 200
