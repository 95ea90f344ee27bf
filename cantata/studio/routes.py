"""Serve Cantata Studio from the package: `/` is the page, `/studio/*` its ES modules and CSS.

The page has no build step and loads nothing from the internet, so everything it needs ships in
`cantata/studio/static/` and is read through `importlib.resources` (works from the source tree
and from an installed wheel alike). It reaches the server only through `/v1`, like any client.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

STATIC = resources.files("cantata.studio") / "static"


def register_routes(app: FastAPI) -> None:
    app.add_api_route("/", studio_page, methods=["GET"], include_in_schema=False)
    app.mount("/studio", StaticFiles(directory=str(STATIC)), name="studio")


async def studio_page() -> HTMLResponse:
    # no-cache: a new server version must not be met by a stale page talking an older protocol
    return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"), headers={"Cache-Control": "no-cache"})
