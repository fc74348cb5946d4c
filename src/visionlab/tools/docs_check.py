"""Open the built documentation site in headless Chromium and screenshot its home page and
the first tutorial page (English and Portuguese): `make docs-check`, after `make docs`.

Each page must render as a Material page (header laid out, so the theme's CSS loaded) with
the title and first heading of its Markdown. Needs Debian's chromium and chromium-driver.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from visionlab.tools.browser import headless_chrome


def pages(site: Path) -> dict[str, str]:
    """Screenshot name -> URL path under the site: the home page, the tutorial's first page
    (its index, else its first chapter) and that page in Portuguese."""
    chapters = sorted(
        p.parent.relative_to(site / "tutorial").as_posix() for p in (site / "tutorial").glob("*/index.html")
    )
    first = "tutorial/" if (site / "tutorial" / "index.html").is_file() else f"tutorial/{chapters[0]}/"
    return {"home": "", "tutorial": first, "tutorial-pt": f"pt/{first}"}


@contextmanager
def serving(site: Path) -> Iterator[str]:
    """The site over HTTP on a free local port, as `mkdocs serve` or a web server would give it."""
    handler = functools.partial(QuietHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def screenshots(site: Path, out: Path) -> dict[str, tuple[str, str]]:
    """Load each of `pages`, save `out/NAME.png`, and return NAME -> (title, first heading)."""
    from selenium.webdriver.common.by import By

    out.mkdir(parents=True, exist_ok=True)
    seen = {}
    with serving(site) as url:
        driver = headless_chrome(out / "profile")
        try:
            for name, path in pages(site).items():
                driver.get(url + path)
                header = driver.find_element(By.CSS_SELECTOR, "header.md-header")
                if header.size["height"] == 0:
                    raise AssertionError(
                        f"{url + path}: the Material header has no height: the theme's CSS did not load"
                    )
                seen[name] = (driver.title, driver.find_element(By.CSS_SELECTOR, "article h1").text)
                driver.save_screenshot(str(out / f"{name}.png"))
        finally:
            driver.quit()
    shutil.rmtree(out / "profile", ignore_errors=True)
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the built site (mkdocs build --site-dir)")
    parser.add_argument("--out", type=Path, default=Path("outputs/docs-check"), help="folder of the screenshots")
    args = parser.parse_args()
    if not (args.site / "index.html").is_file():
        print(f"error: {args.site}/index.html not found; build the site first (make docs)", file=sys.stderr)
        return 2
    for name, (title, heading) in screenshots(args.site, args.out).items():
        print(f"{args.out / name}.png: {title!r}, first heading {heading!r}")
    return 0
