"""A real PostgreSQL for the tests: Debian's server binaries (`apt-get install postgresql`) run a
throw-away cluster on a free loopback port for the test session, and each test gets a fresh
database in it.

The server refuses to run as root, so under root the binaries run as the `postgres` user, in a
data directory (and a unix socket directory) that user owns. Without the binaries, or without
psycopg, a test skips with the reason locally and fails under CI (`unavailable`).

Use: `from pgserver import postgres_server, postgres_url` in a test module, then ask for
`postgres_url` (a `postgresql://` URL of a new empty database).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from serverkit import free_port
from unavailable import unavailable

_USER = "postgres"


@dataclass(frozen=True)
class PostgresServer:
    port: int

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{_USER}@127.0.0.1:{self.port}/{dbname}"

    def admin(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)


def _server_bin() -> Path | None:
    """The newest installed major version's bin directory."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", _USER, "--", *argv] if os.geteuid() == 0 else argv


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        import psycopg  # noqa: F401  (the store's driver; the server is no use without it)
    except ImportError:
        unavailable("psycopg is not installed (pip install 'psycopg[binary]' psycopg-pool)")
    bin_dir = _server_bin()
    if bin_dir is None:
        unavailable("PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="cantata-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        user = pwd.getpwnam(_USER)
        for path in (root, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
    port = free_port()

    def run(program: str, *args: str) -> None:
        subprocess.run(_as_server_user([str(bin_dir / program), *args]), check=True, capture_output=True, text=True)

    try:
        run("initdb", "-D", str(data), "-U", _USER, "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")
        run("pg_ctl", "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "start", "-o",
            f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off")
    except subprocess.CalledProcessError as exc:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {exc.stderr or exc.stdout}{log}", pytrace=False)
    try:
        yield PostgresServer(port)
    finally:
        subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A new, empty database for one test, dropped after it (with any connection left open)."""
    name = f"cantata_{uuid.uuid4().hex[:12]}"
    postgres_server.admin(f"CREATE DATABASE {name}")
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
