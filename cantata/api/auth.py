"""API keys: required by default, stored hashed, each with a name that is its identity.

The name (key id) owns tasks and media (one key never sees another's) and is the unit of queue
fairness. `--no-auth` is an explicit opt-out for local use: every request then acts as "local".

Storage: the keys file holds one `NAME sha256:<hex>` line per key. Keys made by
`cantata keys add` are 32 random bytes (256 bits), so a plain SHA-256 is enough: a salt or a slow
hash protects guessable secrets against precomputed tables and brute force, and neither attack
is feasible against 2**256 possibilities, while a slow hash would cost every request time. Keys
supplied through the environment (`CANTATA_API_KEYS=name=key,...`) are hashed the same way in
memory; choose them as long and random (the server warns below 32 characters).

Lookup hashes the presented key and finds the hash in a dict: the time taken depends on the hash,
not on how much of a real key was guessed.

A running server follows the keys file: `KeyRing` re-reads it when its identity, size or mtime
changed, checking at most once per `RELOAD_INTERVAL`, so `cantata keys add/remove` take effect
within about a second without a restart. Writers never leave a half-written file behind
(`remove_key` replaces it atomically; `add_key` appends one line in one write), and a read that
still catches one (or any malformed file) keeps the keys read before, with a warning, until the
file changes again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import time
from pathlib import Path

from ..logfmt import kv

log = logging.getLogger("cantata.auth")

LOCAL_KEY_ID = "local"
KEY_PREFIX = "cnt_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LINE = re.compile(r"(?P<name>\S+)\s+sha256:(?P<digest>[0-9a-f]{64})")
_MIN_ENV_KEY = 32
#: Seconds between two looks at the keys file (one stat) from a running server.
RELOAD_INTERVAL = 1.0


class KeyFileError(ValueError):
    """The keys file is malformed, or a name is invalid or taken."""


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def read_keys_file(path: Path) -> dict[str, str]:
    """name -> sha256 hex digest; a missing file holds no keys."""
    if not path.exists():
        return {}
    keys: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise KeyFileError(f"{path}:{number}: expected 'NAME sha256:<64 hex digits>'")
        keys[match["name"]] = match["digest"]
    return keys


def add_key(path: Path, name: str) -> str:
    """Make a fresh key named `name`, store its hash in `path` and return the key (shown once)."""
    if not _NAME.fullmatch(name):
        raise KeyFileError(f"invalid key name {name!r}: letters, digits, '_', '.', '-' (up to 64)")
    if name == LOCAL_KEY_ID:
        raise KeyFileError(f"{LOCAL_KEY_ID!r} is reserved for --no-auth")
    if name in read_keys_file(path):
        raise KeyFileError(f"a key named {name!r} already exists in {path}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(f"{name} sha256:{_digest(key)}\n")
    return key


def remove_key(path: Path, name: str) -> bool:
    keys = read_keys_file(path)
    if name not in keys:
        return False
    del keys[name]
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(f"{n} sha256:{d}\n" for n, d in keys.items())
    os.replace(tmp, path)
    return True


class KeyRing:
    """Identifies the API key behind a request. `identify` returns the key id or None.

    `digests` (name -> sha256 hex) are fixed for the ring's life (the environment's keys); with
    `keys_file`, that file's keys are added and followed as it changes (a name in both is the
    fixed one). `digests=None` means no authentication at all (`--no-auth`). A malformed keys
    file raises KeyFileError here, at startup; later it only keeps the keys read before.
    """

    def __init__(self, digests: dict[str, str] | None, *, keys_file: Path | None = None) -> None:
        self.no_auth = digests is None
        self._fixed = dict(digests or {})
        self._keys_file = keys_file
        state = _file_state(keys_file) if keys_file else None
        self._use(read_keys_file(keys_file) if keys_file else {}, state)

    @classmethod
    def from_config(cls, config) -> "KeyRing":
        if config.no_auth:
            return cls(None)
        env: dict[str, str] = {}
        for pair in config.api_keys:
            name, sep, key = pair.partition("=")
            if not sep:
                name, key = "env", pair
            if len(key) < _MIN_ENV_KEY:
                log.warning(kv("auth.weak_key", key=name, note=f"shorter than {_MIN_ENV_KEY} characters"))
            env[name.strip()] = _digest(key.strip())
        ring = cls(env, keys_file=config.api_keys_file)
        if not ring._names:
            log.warning(kv("auth.no_keys", note="no API keys configured: every request will get 401 until "
                           "`cantata keys add NAME` adds one, or start with --no-auth"))
        return ring

    def identify(self, key: object) -> str | None:
        if self.no_auth:
            return LOCAL_KEY_ID
        if not isinstance(key, str) or not key:
            return None
        self._follow_file()
        return self._by_digest.get(_digest(key))

    def knows(self, key_id: str) -> bool:
        """Whether `key_id` is (still) a valid key: a key removed from the file stops working for
        sockets that authenticated with it before, too."""
        if self.no_auth:
            return True
        self._follow_file()
        return key_id in self._names

    def _use(self, file_digests: dict[str, str], file_state: tuple[int, int, int] | None) -> None:
        digests = {**file_digests, **self._fixed}
        self._by_digest = {d: n for n, d in digests.items()}
        self._names = frozenset(digests)
        self._file_state = file_state
        self._checked_at = time.monotonic()

    def _follow_file(self) -> None:
        """Re-read the keys file if it changed since the last read (looked at once per RELOAD_INTERVAL)."""
        now = time.monotonic()
        if self._keys_file is None or now - self._checked_at < RELOAD_INTERVAL:
            return
        self._checked_at = now
        state = _file_state(self._keys_file)  # before reading: a change after this is seen next time
        if state == self._file_state:
            return
        try:
            file_digests = read_keys_file(self._keys_file)
        except (KeyFileError, OSError, UnicodeDecodeError) as exc:
            self._file_state = state  # warn once per version of the file, not once a second
            log.warning(kv("auth.keys_file_unreadable", path=str(self._keys_file), error=str(exc),
                           note="keeping the keys read before"))
            return
        before = self._names
        self._use(file_digests, state)
        log.info(kv("auth.keys_reloaded", added=",".join(sorted(self._names - before)) or None,
                    removed=",".join(sorted(before - self._names)) or None))


def _file_state(path: Path) -> tuple[int, int, int] | None:
    """What tells one version of the file from another: inode (a replaced file), size (an
    appended line) and mtime; None while there is no file to look at."""
    try:
        st = path.stat()
    except OSError:  # missing (no keys) or unreadable (the read that follows says why)
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns
