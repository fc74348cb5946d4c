"""MkDocs hook: a nav entry written as a folder (`Tutorial: tutorial/`) lists that folder's
English pages, index.md first, then by file name, so a new chapter needs no edit of
mkdocs.yml. Portuguese pages (NAME.pt.md) are the i18n plugin's: it pairs them with NAME.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority


def _pages(docs: Path, folder: str) -> list[str]:
    pages = [p for p in (docs / folder).glob("*.md") if "." not in p.stem]
    pages.sort(key=lambda p: (p.stem != "index", p.name))
    return [p.relative_to(docs).as_posix() for p in pages]


def _expand(nav: Any, docs: Path) -> Any:
    if isinstance(nav, list):
        return [_expand(item, docs) for item in nav]
    if isinstance(nav, dict):
        return {title: _expand(value, docs) for title, value in nav.items()}
    if isinstance(nav, str) and nav.endswith("/"):
        return _pages(docs, nav) or nav  # an empty folder stays as written: the build reports it
    return nav


@event_priority(100)  # before the i18n plugin reads the nav
def on_config(config: MkDocsConfig) -> MkDocsConfig:
    config.nav = _expand(config.nav, Path(config.docs_dir))
    return config
