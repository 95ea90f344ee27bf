"""Media on S3-compatible object storage (AWS S3, SeaweedFS, MinIO, R2, ...), so that every API
node and every worker of a deployment reads and writes the same uploads and results.

Objects live at `s3://<bucket>/<prefix>/<2 hex>/<uuid><ext>`: the part after the prefix is the
storage key that `LocalDiskStorage.key_for` builds from a validated UUID and an extension from a
fixed list, and every operation checks a key against that rule (`media.check_key`) before it
becomes an object name.

Threat model, and why it is built this way:
* Keys never come from clients. A client names media by UUID; the API looks the record up in
  the store and only the stored key reaches S3, so no request can read, overwrite or delete an
  object outside `<prefix>/<2 hex>/<uuid><ext>`, nor probe other objects of the bucket.
* The bucket stays private. By default the API streams objects through (any node can, so a
  node's death loses no result URL) and the server's credentials never leave it. With
  `presign=True` the media route instead redirects to a presigned GET URL: it names one object,
  carries its content type, and expires (the route asks for no more than an hour and never past
  the media's own expiry), so a leaked link is worth little and nothing can be listed or written
  with it. The S3 endpoint must then be reachable by the clients, not only by the server.
* Expiry deletes objects: the engine's sweeper calls `delete` for every expired media row.
  `delete` is idempotent, so a sweep that dies half-way is simply repeated.
* A dead or black-holed S3 must not hang request handlers or workers: connect and read timeouts
  and a small retry budget are set (`botocore.config.Config`), and every failure other than a
  missing object is raised as `StorageUnavailable` naming the endpoint, bucket and operation.
  `writable()` (the readiness probe) uses its own one-attempt client and never raises.

Configuration: the endpoint, region and credentials are explicit arguments, or else the usual
AWS variables (`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, `AWS_REGION` / `AWS_DEFAULT_REGION`,
`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, or any other source of boto3's credential chain).
`open_media_storage` turns a `--media` value into a storage.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .media import EXT_MIME, LocalDiskStorage, MediaStorage, StorageUnavailable, check_key

__all__ = ["S3MediaStorage", "open_media_storage", "parse_s3_url"]

#: Seconds to open a TCP connection to S3, and to wait for bytes on an open one.
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 30.0
#: Attempts per request (the first included), with botocore's standard backoff between them.
MAX_ATTEMPTS = 3
#: The readiness probe answers within about PROBE_TIMEOUT * 2 seconds, whatever S3 does.
PROBE_TIMEOUT = 1.5
_MISSING = {"NoSuchKey", "404", "NotFound"}
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix"); ValueError for anything else."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not _BUCKET_RE.fullmatch(bucket):
        raise ValueError(f"not an S3 bucket name: {bucket!r} (3-63 lowercase letters, digits, dots, hyphens)")
    return bucket, prefix.strip("/")


class S3MediaStorage:
    """`MediaStorage` over one bucket and key prefix; see the module docstring."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None, access_key_id: str | None = None,
                 secret_access_key: str | None = None, presign: bool = False) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.presign = presign
        self.endpoint_url = (endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
                             or os.environ.get("AWS_ENDPOINT_URL") or None)
        region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        session = boto3.session.Session(aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
                                        region_name=region)
        # Path-style addressing for custom endpoints: S3-compatible servers rarely have per-bucket DNS.
        addressing = {"addressing_style": "path" if self.endpoint_url else "auto"}

        def client(connect: float, read: float, attempts: int):
            config = Config(signature_version="s3v4", s3=addressing, connect_timeout=connect, read_timeout=read,
                            retries={"total_max_attempts": attempts, "mode": "standard"})
            return session.client("s3", endpoint_url=self.endpoint_url, config=config)

        self._s3 = client(CONNECT_TIMEOUT, READ_TIMEOUT, MAX_ATTEMPTS)
        self._probe = client(PROBE_TIMEOUT, PROBE_TIMEOUT, 1)

    def __repr__(self) -> str:
        return f"S3MediaStorage(s3://{self.bucket}/{self.prefix}, endpoint={self.endpoint_url or 'AWS'})"

    def _object(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _failed(self, operation: str, key: str, exc: Exception) -> StorageUnavailable:
        where = self.endpoint_url or "AWS S3"
        return StorageUnavailable(f"S3 {operation} of s3://{self.bucket}/{self._object(key)} at {where} failed: {exc}")

    def put(self, media_id: str, ext: str, data: bytes) -> str:
        key = LocalDiskStorage.key_for(media_id, ext)
        try:  # a PUT is atomic in S3: readers see the whole object or none
            self._s3.put_object(Bucket=self.bucket, Key=self._object(key), Body=data, ContentType=EXT_MIME[ext])
        except (BotoCoreError, ClientError) as exc:
            raise self._failed("PUT", key, exc) from exc
        return key

    def get(self, key: str) -> bytes:
        stream = self.open(key)
        try:
            return stream.read()
        except BotoCoreError as exc:  # the connection broke or stalled mid-body
            raise self._failed("GET", key, exc) from exc
        finally:
            stream.close()

    def open(self, key: str, offset: int = 0) -> BinaryIO:
        """The object's body as botocore's streaming body (read in chunks, close when done)."""
        extra = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            return self._s3.get_object(Bucket=self.bucket, Key=self._object(key), **extra)["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise FileNotFoundError(f"s3://{self.bucket}/{self._object(key)}") from exc
            raise self._failed("GET", key, exc) from exc
        except BotoCoreError as exc:
            raise self._failed("GET", key, exc) from exc

    def delete(self, key: str) -> None:
        try:  # S3 answers a DELETE of a missing object with success: deleting twice is fine
            self._s3.delete_object(Bucket=self.bucket, Key=self._object(key))
        except (BotoCoreError, ClientError) as exc:
            raise self._failed("DELETE", key, exc) from exc

    def local_path(self, key: str) -> Path | None:
        return None

    def writable(self) -> bool:
        """Whether the bucket answers with these credentials (HEAD bucket: no object is written)."""
        try:
            self._probe.head_bucket(Bucket=self.bucket)
            return True
        except Exception:  # a probe: any failure means "not ready", never an error of its own
            return False

    def presigned_url(self, key: str, *, mime: str, expires_in: int) -> str | None:
        """A GET URL for one object, answered with `mime` as its Content-Type; None unless the
        storage was made with `presign=True` (signing is local: no request is made)."""
        name = self._object(key)
        if not self.presign:
            return None
        return self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": name, "ResponseContentType": mime},
            ExpiresIn=expires_in)


def open_media_storage(spec: str | Path | None, *, local_root: str | Path, presign: bool = False) -> MediaStorage:
    """The storage a `--media` value names: None -> `LocalDiskStorage(local_root)`; a path -> a
    local folder there; `s3://bucket/prefix` -> `S3MediaStorage` (endpoint, region and
    credentials from the AWS variables). `presign` applies to S3 only (local files are served
    by the API)."""
    if spec is None or str(spec) == "":
        return LocalDiskStorage(local_root)
    spec = str(spec)
    if spec.startswith("s3://"):
        bucket, prefix = parse_s3_url(spec)
        return S3MediaStorage(bucket, prefix, presign=presign)
    if "://" in spec:
        raise ValueError(f"unsupported media storage {spec!r}: give a folder or s3://bucket/prefix")
    return LocalDiskStorage(Path(spec).expanduser())
