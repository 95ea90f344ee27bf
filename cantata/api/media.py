"""`GET /v1/media/<uuid>.<ext>` (`responses.MEDIA_ROUTE`): result files and uploads.

UUIDs are unguessable, like Runware's URLs; once a file's ttl is over it answers 404
`mediaExpired`, and an unknown or deleted one 404 `mediaNotFound`. How the bytes travel depends
on the engine's media storage, asked only through the engine:

* a file on this machine's disk is sent as a file (Starlette's `FileResponse`: single and
  multiple byte ranges, conditional requests);
* an object elsewhere (S3) is streamed through this node, so any API node serves any result
  and the bucket stays private; a single byte range (`Range: bytes=a-b`, `a-`, `-n`) is
  honoured, so players can seek; several ranges or an `If-Range` get the whole file (allowed
  by RFC 9110, which lets a server ignore `Range`);
* a result asked for in another output format (`.flac` of an `.mp3`) is converted (`transcode`);
* when the storage was configured to hand out presigned links, a 307 redirect to one, valid
  for at most `LINK_SECONDS` and never past the media's own expiry.

A storage that cannot be reached answers 503 `serviceUnavailable`; what failed is logged (the
endpoint and bucket are the operator's business, not an anonymous client's).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import BinaryIO

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from ..audio import codecs
from ..errors import CantataError
from ..jobs.media import StorageUnavailable, is_media_id
from ..jobs.store import MediaRecord
from ..logfmt import kv
from .http import envelope
from . import transcode
from .services import Services

log = logging.getLogger("cantata.media")

#: How long a presigned link lives at most, and how long a client may cache a served file.
LINK_SECONDS = 3600
_CACHE = {"Cache-Control": f"private, max-age={LINK_SECONDS}"}
_CHUNK = 256 * 1024
_RANGE_RE = re.compile(r"bytes=(?P<first>[0-9]*)-(?P<last>[0-9]*)", re.IGNORECASE)


class _Unsatisfiable(Exception):
    """The Range starts past the end of the file (416)."""


async def media(request: Request, name: str) -> Response:
    s: Services = request.app.state.cantata
    media_id, dot, ext = name.partition(".")
    record = s.engine.find_media(media_id) if is_media_id(media_id) else None
    fmt = record and transcode.target_format(record, dot + ext)
    if record is None or (record.ext != dot + ext and fmt is None):
        return envelope([], [s.dispatcher.error("mediaNotFound", f"No media {name[:80]}.")])
    now = s.engine.clock()
    if record.expires_at <= now:
        return envelope([], [s.dispatcher.error("mediaExpired", f"{name} has expired (its ttl is over).")])
    if fmt is not None:
        return await _converted(s, record, fmt, name)
    path = s.engine.media_path(record)
    if path is not None:
        if not path.is_file():
            return envelope([], [s.dispatcher.error("mediaNotFound", f"No media {name}.")])
        return FileResponse(path, media_type=record.mime, headers=_CACHE)
    link = s.engine.media_link(record, max(1, min(LINK_SECONDS, int(record.expires_at - now))))
    if link is not None:
        return RedirectResponse(link, status_code=307, headers={"Cache-Control": "no-store"})
    return await _stream(request, s, record, name)


async def _converted(s: Services, record: MediaRecord, fmt: str, name: str) -> Response:
    """The result in another output format (`transcode`)."""
    def read_and_convert() -> bytes:
        with s.engine.open_media(record) as stream:
            return transcode.convert(stream.read(), fmt, max_seconds=s.config.max_input_audio_seconds)

    try:
        data = await run_in_threadpool(read_and_convert)
    except FileNotFoundError:
        return envelope([], [s.dispatcher.error("mediaNotFound", f"No media {name}.")])
    except StorageUnavailable as exc:
        return _unavailable(s, name, exc)
    except CantataError as exc:  # the stored file does not decode within the limits
        return envelope([], [s.dispatcher.error(exc.code, f"{name} cannot be converted: {exc.message}")])
    return Response(data, media_type=codecs.MIME_TYPES[fmt], headers=_CACHE)


def _unavailable(s: Services, name: str, exc: StorageUnavailable) -> Response:
    """503: the details (endpoint, bucket) go to the log, not to anonymous clients."""
    log.warning(kv("media.storage_unavailable", media=name, error=str(exc)))
    return envelope([], [s.dispatcher.error("serviceUnavailable", "The media storage cannot be reached; "
                                            "retry shortly.")])


async def _stream(request: Request, s: Services, record: MediaRecord, name: str) -> Response:
    """The object streamed through this node, whole or one byte range of it."""
    try:
        span = None if "if-range" in request.headers else _single_range(request.headers.get("range"), record.size)
    except _Unsatisfiable:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{record.size}"})
    start, end = span or (0, record.size - 1)
    try:
        stream = await run_in_threadpool(s.engine.open_media, record, start)
    except FileNotFoundError:
        return envelope([], [s.dispatcher.error("mediaNotFound", f"No media {name}.")])
    except StorageUnavailable as exc:
        return _unavailable(s, name, exc)
    length = end - start + 1
    headers = {**_CACHE, "Accept-Ranges": "bytes", "Content-Length": str(length)}
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end}/{record.size}"
    status = 206 if span is not None else 200
    if request.method == "HEAD":
        await run_in_threadpool(stream.close)
        return Response(status_code=status, headers=headers, media_type=record.mime)
    return StreamingResponse(_chunks(stream, length), status_code=status, headers=headers, media_type=record.mime)


def _chunks(stream: BinaryIO, length: int) -> Iterator[bytes]:
    """`length` bytes of `stream` in chunks (run in the thread pool by Starlette); closes it."""
    try:
        while length > 0:
            chunk = stream.read(min(_CHUNK, length))
            if not chunk:
                return  # shorter than recorded: the server closes the connection, the client sees it cut
            length -= len(chunk)
            yield chunk
    finally:
        stream.close()


def _single_range(value: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single `Range: bytes=…` within `size`; None when the header is
    absent, malformed or asks for several ranges (the whole file is sent); _Unsatisfiable when
    it starts past the end."""
    match = _RANGE_RE.fullmatch((value or "").strip())
    if match is None or match["first"] == match["last"] == "":
        return None
    first, last = (int(v) if v else None for v in match.group("first", "last"))
    if first is None:  # the last n bytes
        if last == 0 or size == 0:
            raise _Unsatisfiable
        return max(0, size - last), size - 1
    if last is not None and last < first:
        return None
    if first >= size:
        raise _Unsatisfiable
    return first, size - 1 if last is None else min(last, size - 1)
