"""Where media bytes live: uploaded input audio and encoded results.

`MediaStorage` is the interface the rest of the server uses; `LocalDiskStorage` keeps files under
one directory (`s3_media.S3MediaStorage` keeps them in an S3 bucket). Storage keys are built here
from a validated UUID and an extension from a fixed list, never from anything else a client sent,
so no request can name a path. Writes are atomic (temporary file + rename): a crash leaves either
the whole file or none.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO, Protocol

from ..audio.codecs import FILE_EXTENSIONS, MIME_TYPES

UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
#: Canonical MIME type of every extension we store; uploads of unknown type are ".bin".
EXT_MIME = {
    **{FILE_EXTENSIONS[fmt]: mime for fmt, mime in MIME_TYPES.items()},
    ".m4a": "audio/mp4", ".aac": "audio/aac", ".webm": "audio/webm", ".opus": "audio/opus",
    ".aiff": "audio/aiff", ".bin": "application/octet-stream",
}
_MIME_ALIASES = {"audio/mp3": ".mp3", "audio/x-wav": ".wav", "audio/wave": ".wav", "audio/x-flac": ".flac",
                 "audio/vorbis": ".ogg", "audio/x-m4a": ".m4a", "audio/x-aiff": ".aiff"}


def is_media_id(value: str) -> bool:
    return isinstance(value, str) and UUID_RE.fullmatch(value) is not None


class StorageUnavailable(OSError):
    """The storage backend could not be reached or refused the operation (not: the key is missing,
    which is FileNotFoundError). The message names the backend and the operation."""


def check_key(key: str) -> str:
    """`key` when it is one `LocalDiskStorage.key_for` could have built, else ValueError: every
    storage resolves only such keys, so a stored key can never name another file or object."""
    directory, _, name = key.partition("/")
    stem, dot, ext = name.partition(".")
    if LocalDiskStorage.key_for(stem, dot + ext) != key:
        raise ValueError(f"not a storage key: {key!r}")
    return key


def extension_for(mime: str | None) -> str:
    """File extension for a declared MIME type; ".bin" when unknown (the decoder sniffs the bytes)."""
    base = (mime or "").split(";")[0].strip().lower()
    return _MIME_ALIASES.get(base) or next((ext for ext, m in EXT_MIME.items() if m == base), ".bin")


class MediaStorage(Protocol):
    """Bytes by storage key. `put` returns the key; the caller records it with the media row."""

    def put(self, media_id: str, ext: str, data: bytes) -> str: ...
    def get(self, key: str) -> bytes: ...
    def open(self, key: str, offset: int = 0) -> BinaryIO:
        """The bytes from `offset` to the end as a stream; FileNotFoundError when the key is gone."""
    def delete(self, key: str) -> None: ...
    def local_path(self, key: str) -> Path | None: ...
    def writable(self) -> bool: ...
    def presigned_url(self, key: str, *, mime: str, expires_in: int) -> str | None:
        """A URL a client may GET directly for `expires_in` seconds; None when the storage has none."""


class LocalDiskStorage:
    """Files under `root/<first two hex digits>/<uuid><ext>` (256 fan-out directories)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key_for(media_id: str, ext: str) -> str:
        if not is_media_id(media_id):
            raise ValueError(f"not a media UUID: {media_id!r}")
        if ext not in EXT_MIME:
            raise ValueError(f"unsupported media extension {ext!r}")
        media_id = media_id.lower()
        return f"{media_id[:2]}/{media_id}{ext}"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, media_id: str, ext: str, data: bytes) -> str:
        key = self.key_for(media_id, ext)
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def open(self, key: str, offset: int = 0) -> BinaryIO:
        stream = self._path(key).open("rb")
        stream.seek(offset)
        return stream

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def writable(self) -> bool:
        try:
            with tempfile.TemporaryFile(dir=self.root):
                return True
        except OSError:
            return False

    def presigned_url(self, key: str, *, mime: str, expires_in: int) -> str | None:
        return None  # the API serves these files itself
