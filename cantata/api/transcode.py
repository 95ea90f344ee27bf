"""A result in another format than it was made in: `GET /v1/media/<uuid>.flac` of a result stored
as `.mp3` answers the same audio encoded as FLAC (a Cantata extension; the Studio's "download in
each format").

The stored file is decoded and encoded again at 48 kHz stereo with each format's defaults, so a
conversion never adds what the stored encoding lost: ask for WAV or FLAC at generation time for
lossless audio. Only results convert (uploads are the client's own files), only to the output
formats, and only as much audio as an input may hold (`max_seconds`), so a request cannot make
the node decode more than any task could.
"""

from __future__ import annotations

from ..audio import codecs
from ..audio.decode import decode_audio
from ..jobs.store import MediaRecord

_FORMAT_OF = {ext: fmt for fmt, ext in codecs.FILE_EXTENSIONS.items()}
_RATE = 48_000


def target_format(record: MediaRecord, ext: str) -> str | None:
    """The output format a request for `ext` converts this record to, or None when it does not
    convert (same extension, not a result, or not an output format)."""
    if record.kind != "result" or ext == record.ext:
        return None
    return _FORMAT_OF.get(ext)


def convert(data: bytes, fmt: str, *, max_seconds: float) -> bytes:
    """The stored file's audio encoded as `fmt` (`AudioDecodeError` past `max_seconds`)."""
    return codecs.encode(decode_audio(data, target_sample_rate=_RATE, max_seconds=max_seconds), _RATE, fmt)
