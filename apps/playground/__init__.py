"""The BiLO playground: a static page (index.html, style.css, js/*.js) that trains BiLO and a
PINN in the browser. `make_server` hands it out on localhost with http.server; `export`
copies it to a folder for any static web host. Nothing here computes: the engine is the page's
JavaScript (js/tape.js, jet.js, model.js, problems.js, trainer.js)."""

from __future__ import annotations

import functools
import http.server
import shutil
from pathlib import Path

SITE = Path(__file__).parent
# what the page needs (this package's Python files are not part of the site)
FILES = ("index.html", "style.css", "js/*.js")


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".js": "text/javascript", ".mjs": "text/javascript"}

    def log_message(self, format, *args):  # quiet: the URL is printed once instead
        pass


def make_server(port: int = 8000, host: str = "127.0.0.1") -> http.server.ThreadingHTTPServer:
    """A server of the page on host:port (port 0: any free port); call serve_forever()."""
    handler = functools.partial(_Handler, directory=str(SITE))
    return http.server.ThreadingHTTPServer((host, port), handler)


def site_files() -> list[Path]:
    return sorted(p for pattern in FILES for p in SITE.glob(pattern))


def export(folder: str | Path) -> list[Path]:
    """Copy the static site to folder (created if needed); returns the files written."""
    folder = Path(folder)
    written = []
    for path in site_files():
        target = folder / path.relative_to(SITE)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        written.append(target)
    return written
