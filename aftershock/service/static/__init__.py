"""The search page served at ``/`` by `aftershock serve`: one plain HTML/JS file (``index.html``), no build
step and no CDN; it talks to the service's own ``/search`` and ``/info``."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def page_html() -> str:
    return resources.files(__name__).joinpath("index.html").read_text(encoding="utf-8")


async def search_page():
    """GET / : the search page."""
    from fastapi.responses import HTMLResponse

    return HTMLResponse(page_html())
