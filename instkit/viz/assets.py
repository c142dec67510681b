"""The page template, style sheet and script inlined into every report's ``index.html``.

They live as package data files (``instkit/viz/static/page.html``, ``page.css``, ``page.js``,
listed in pyproject's package data) so editors and linters see real HTML, CSS and JavaScript;
read once, at import, with ``importlib.resources``. The script reads ``window.INSTKIT_REPORT``
from ``data.js`` beside the page; nothing is fetched, so the page works from ``file://`` with no
server and no network.
"""

from __future__ import annotations

from importlib import resources


def _read(name: str) -> str:
    return resources.files("instkit.viz").joinpath("static").joinpath(name).read_text(encoding="utf-8")


#: the page, with ``__TITLE__``, ``__CSS__`` and ``__JS__`` to fill in
TEMPLATE = _read("page.html")
CSS = _read("page.css")
JS = _read("page.js")
