"""Input audio for cover/repaint (`inputs.audio`, `inputs.referenceAudios`) and `mediaStorage` uploads.

A client may name input audio four ways; each is settled at the point where it is cheap:

* a media UUID (a `mediaStorage` upload or a previous result of the same API key): checked when
  the task is accepted (exists, not expired, same owner);
* a data URI or raw base64: decoded and stored as an upload when the task is accepted, so a bad
  encoding is a 400 right away and the stored task carries a small UUID instead of megabytes;
* an http(s) URL: its form and any literal address are checked against the outbound policy at
  acceptance; the download itself runs after the task is acknowledged (a slow server must not
  delay the ACK), in the engine's download threads, and becomes an upload owned by the task's key.

The bytes are decoded to the pipeline's 48 kHz stereo float only when the task starts, and
failures of any step become the task's error with the code of what failed
(`invalidAudio*` from the decoder, `url*` from the outbound client, `mediaNotFound`).
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from collections.abc import Callable

import numpy as np

from ..audio.decode import AudioDecodeError, decode_audio
from ..errors import CantataError
from ..outbound import OutboundError, OutboundPolicy, check_url, fetch_bytes_sync
from .media import MediaStorage, extension_for, is_media_id
from .store import MediaRecord, Store

INVALID_AUDIO_TOO_LARGE = "invalidAudioTooLarge"


class InputError(CantataError):
    """Unusable input audio; `code` is reported to the client, `parameter` names the field."""

    def __init__(self, code: str, message: str, parameter: str | None = None) -> None:
        super().__init__(code, message, parameter=parameter)


def is_url(value: str) -> bool:
    return value[:8].lower().startswith(("http://", "https://"))


class InputAudio:
    def __init__(self, store: Store, storage: MediaStorage, policy: OutboundPolicy, *, max_bytes: int,
                 max_seconds: float, retention: float, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.storage = storage
        self.policy = policy
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.retention = retention
        self.clock = clock

    # -- acceptance ----------------------------------------------------------------------------

    def accept(self, value: str, *, owner: str, parameter: str) -> str:
        """The reference to keep in the stored task: a media UUID, or a URL still to download."""
        if is_media_id(value):
            self.owned_media(value, owner=owner, parameter=parameter)
            return value.lower()
        if is_url(value):
            try:
                check_url(value, self.policy)
            except OutboundError as exc:
                raise InputError(exc.code, str(exc), parameter) from None
            return value
        data, mime = self.decode_inline(value, parameter)
        return self.save_upload(data, mime, owner=owner).id

    def owned_media(self, media_id: str, *, owner: str, parameter: str | None) -> MediaRecord:
        record = self.store.get_media(media_id)
        if record is None or record.owner != owner or record.expires_at <= self.clock():
            raise InputError("mediaNotFound", f"no media with UUID {media_id} for this API key (uploads and "
                             "results expire; a UUID of another key's media is not visible)", parameter)
        return record

    def decode_inline(self, value: str, parameter: str | None) -> tuple[bytes, str | None]:
        """Bytes and declared MIME type of a data URI or raw base64 string."""
        mime = None
        payload = value
        if value[:5].lower() == "data:":
            header, comma, payload = value[5:].partition(",")
            params = header.split(";")
            if not comma or "base64" not in (p.strip().lower() for p in params[1:]):
                raise InputError("invalidInputsAudio", "a data URI must be 'data:<mime>;base64,<data>'.", parameter)
            mime = params[0].strip() or None
        payload = "".join(payload.split())
        if len(payload) * 3 // 4 > self.max_bytes:
            raise InputError(INVALID_AUDIO_TOO_LARGE, f"audio is over the {self.max_bytes} byte limit", parameter)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise InputError("invalidInputsAudio", "not a URL, a data URI, base64 data or a media UUID.",
                             parameter) from None
        if not data:
            raise InputError("invalidAudioEmpty", "audio is empty (0 bytes)", parameter)
        return data, mime

    def save_upload(self, data: bytes, mime: str | None, *, owner: str) -> MediaRecord:
        if len(data) > self.max_bytes:
            raise InputError(INVALID_AUDIO_TOO_LARGE, f"audio is over the {self.max_bytes} byte limit")
        media_id = str(uuid.uuid4())
        ext = extension_for(mime)
        key = self.storage.put(media_id, ext, data)
        now = self.clock()
        record = MediaRecord(id=media_id, kind="upload", storage_key=key, ext=ext,
                             mime=mime if ext != ".bin" else "application/octet-stream", size=len(data),
                             owner=owner, created_at=now, expires_at=now + self.retention)
        self.store.insert_media(record)
        return record

    # -- after acknowledgement -----------------------------------------------------------------

    def download(self, url: str, *, owner: str, parameter: str | None = None) -> MediaRecord:
        """Fetch an input URL under the outbound policy (blocking; run it off the event loop)."""
        try:
            data, content_type = fetch_bytes_sync(url, self.policy)
        except OutboundError as exc:
            raise InputError(exc.code, str(exc), parameter) from None
        if not data:
            raise InputError("invalidAudioEmpty", f"{url} returned no bytes", parameter)
        return self.save_upload(data, content_type, owner=owner)

    def waveform(self, media_id: str, *, parameter: str | None = None) -> np.ndarray:
        """Decode stored input audio into float32 [2, samples] at 48 kHz."""
        record = self.store.get_media(media_id)
        if record is None:
            raise InputError("mediaNotFound", f"input media {media_id} has expired or was deleted", parameter)
        try:
            data = self.storage.get(record.storage_key)
            return decode_audio(data, max_seconds=self.max_seconds)
        except AudioDecodeError as exc:
            raise InputError(exc.code, f"{parameter or 'input audio'}: {exc.message}", parameter) from None
        except OSError:
            raise InputError("mediaNotFound", f"input media {media_id} is missing from storage", parameter) from None
