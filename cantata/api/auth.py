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
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from pathlib import Path

from ..jobs.logfmt import kv

log = logging.getLogger("cantata.auth")

LOCAL_KEY_ID = "local"
KEY_PREFIX = "cnt_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LINE = re.compile(r"(?P<name>\S+)\s+sha256:(?P<digest>[0-9a-f]{64})")
_MIN_ENV_KEY = 32


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
    """Identifies the API key behind a request. `identify` returns the key id or None."""

    def __init__(self, digests: dict[str, str] | None) -> None:
        self.no_auth = digests is None
        self._by_digest = {d: n for n, d in (digests or {}).items()}

    @classmethod
    def from_config(cls, config) -> "KeyRing":
        if config.no_auth:
            return cls(None)
        digests = read_keys_file(config.api_keys_file)
        for pair in config.api_keys:
            name, sep, key = pair.partition("=")
            if not sep:
                name, key = "env", pair
            if len(key) < _MIN_ENV_KEY:
                log.warning(kv("auth.weak_key", key=name, note=f"shorter than {_MIN_ENV_KEY} characters"))
            digests[name.strip()] = _digest(key.strip())
        if not digests:
            log.warning(kv("auth.no_keys", note="no API keys configured: every request will get 401; "
                           "run `cantata keys add NAME` or start with --no-auth"))
        return cls(digests)

    def identify(self, key: object) -> str | None:
        if self.no_auth:
            return LOCAL_KEY_ID
        if not isinstance(key, str) or not key:
            return None
        return self._by_digest.get(_digest(key))
