"""`GET /v1/media/<uuid>.<ext>` (`responses.MEDIA_ROUTE`): result files and uploads.

UUIDs are unguessable, like Runware's URLs; once a file's ttl is over it answers 404
`mediaExpired`, and an unknown or deleted one 404 `mediaNotFound`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from ..jobs.media import is_media_id
from .http import envelope
from .services import Services


async def media(request: Request, name: str) -> Response:
    s: Services = request.app.state.cantata
    media_id, dot, ext = name.partition(".")
    record = s.engine.find_media(media_id) if is_media_id(media_id) else None
    if record is None or record.ext != dot + ext:
        return envelope([], [s.dispatcher.error("mediaNotFound", f"No media {name[:80]}.")])
    if record.expires_at <= s.engine.clock():
        return envelope([], [s.dispatcher.error("mediaExpired", f"{name} has expired (its ttl is over).")])
    path = s.engine.media_path(record)
    if path is None or not path.is_file():
        return envelope([], [s.dispatcher.error("mediaNotFound", f"No media {name}.")])
    return FileResponse(path, media_type=record.mime, headers={"Cache-Control": "private, max-age=3600"})
