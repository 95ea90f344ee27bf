"""Media on S3 (`cantata.jobs.s3_media`) against a real S3-compatible server (SeaweedFS, started
by `s3server.py` on loopback; each test has its own bucket): the storage contract, key
validation, presigned URLs, fail-fast when S3 is gone, the `--media` factory, and the media
route end to end on a real app whose results and uploads are S3 objects, streamed through the
API or handed out as presigned redirects."""

from __future__ import annotations

import base64
import contextlib
import socket
import time
import uuid

import httpx
import pytest
from starlette.testclient import TestClient

from cantata.api.app import create_app
from cantata.jobs.engine import Engine, pipeline_loader
from cantata.jobs.inputs import InputAudio
from cantata.jobs.media import LocalDiskStorage, StorageUnavailable
from cantata.jobs.s3_media import PROBE_TIMEOUT, S3MediaStorage, open_media_storage
from cantata.jobs.scheduler import Scheduler
from cantata.jobs.store import Store
from s3server import S3Server, s3_bucket, s3_server  # noqa: F401  (fixtures)
from serverkit import config, new_uuid, path_of, post, read_audio, server_checkpoints, task, wait_for

PREFIX = "tenant-a/media"
DATA = bytes(range(256)) * 40  # 10 KiB, every byte value


def storage_for(server: S3Server, bucket: str, *, presign: bool = False) -> S3MediaStorage:
    return S3MediaStorage(bucket, PREFIX, presign=presign, **server.storage_kwargs())


def object_keys(server: S3Server, bucket: str) -> list[str]:
    return [o["Key"] for o in server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


# -- the storage contract -------------------------------------------------------------------------


def test_put_get_open_delete_against_real_s3(s3_server, s3_bucket):
    storage = storage_for(s3_server, s3_bucket)
    media_id = str(uuid.uuid4()).upper()  # ids are matched case-insensitively, keys are lower case
    key = storage.put(media_id, ".mp3", DATA)
    assert key == LocalDiskStorage.key_for(media_id, ".mp3") == f"{media_id[:2].lower()}/{media_id.lower()}.mp3"
    assert object_keys(s3_server, s3_bucket) == [f"{PREFIX}/{key}"]
    head = s3_server.client().head_object(Bucket=s3_bucket, Key=f"{PREFIX}/{key}")
    assert head["ContentType"] == "audio/mpeg" and head["ContentLength"] == len(DATA)

    assert storage.get(key) == DATA
    stream = storage.open(key)
    assert b"".join(iter(lambda: stream.read(1000), b"")) == DATA  # a stream, read in chunks
    stream.close()
    tail = storage.open(key, 9000)
    assert tail.read() == DATA[9000:]
    tail.close()
    assert storage.local_path(key) is None
    assert storage.writable() is True
    assert storage.presigned_url(key, mime="audio/mpeg", expires_in=60) is None  # not configured to presign

    storage.delete(key)
    assert object_keys(s3_server, s3_bucket) == []
    storage.delete(key)  # idempotent: an expiry sweep that died half-way simply runs again
    with pytest.raises(FileNotFoundError):
        storage.get(key)
    with pytest.raises(FileNotFoundError):
        storage.open(key)


def test_keys_not_built_from_a_media_uuid_are_refused_before_reaching_s3(s3_server, s3_bucket):
    storage = storage_for(s3_server, s3_bucket)
    good = str(uuid.uuid4())
    for media_id, ext in (("../../etc/passwd", ".mp3"), (good, ".exe"), (good, "/../x.mp3"), ("", ".wav")):
        with pytest.raises(ValueError):
            storage.put(media_id, ext, DATA)
    bad_keys = ["../secret.mp3", f"{good[:2]}/../{good}.mp3", f"{good}.mp3", f"zz/{good}.mp3",
                f"{good[:2].upper()}/{good.upper()}.mp3", f"{good[:2]}/{good}.exe", f"{good[:2]}/{good}.mp3/x", ""]
    for key in bad_keys:
        for call in (storage.get, storage.open, storage.delete,
                     lambda k: storage.presigned_url(k, mime="audio/mpeg", expires_in=60)):
            with pytest.raises(ValueError, match="not a storage key|not a media UUID|unsupported media extension"):
                call(key)
    assert object_keys(s3_server, s3_bucket) == []


def test_presigned_urls_serve_one_object_with_its_type_and_nothing_else(s3_server, s3_bucket):
    storage = storage_for(s3_server, s3_bucket, presign=True)
    key = storage.put(new_uuid(), ".wav", DATA)
    other = storage.put(new_uuid(), ".wav", b"another file")
    url = storage.presigned_url(key, mime="audio/wav", expires_in=120)
    link = httpx.URL(url)
    assert link.params["X-Amz-Expires"] == "120" and "X-Amz-Signature" in link.params
    assert url.startswith(f"{s3_server.endpoint_url}/{s3_bucket}/{PREFIX}/{key}?")
    got = httpx.get(url)
    assert got.status_code == 200 and got.content == DATA and got.headers["content-type"] == "audio/wav"

    # The signature covers the object and the parameters: neither can be changed by its holder.
    assert httpx.get(url.replace(key, other)).status_code == 403
    assert httpx.get(url.replace("X-Amz-Expires=120", "X-Amz-Expires=604800")).status_code == 403
    # And the bucket itself is private: the same object without a signature is refused.
    assert httpx.get(f"{s3_server.endpoint_url}/{s3_bucket}/{PREFIX}/{key}").status_code == 403


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _silent_server():
    """A TCP port that accepts connections and never answers (a hung S3)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def test_a_dead_or_hung_s3_fails_fast_with_a_clear_error(s3_server):
    dead = S3MediaStorage("cantata-media", PREFIX, **{**s3_server.storage_kwargs(),
                                                      "endpoint_url": f"http://127.0.0.1:{_closed_port()}"})
    started = time.monotonic()
    assert dead.writable() is False
    where = r"S3 PUT of s3://cantata-media/tenant-a/media/[0-9a-f]{2}/.*\.mp3 at http://127\.0\.0\.1:"
    with pytest.raises(StorageUnavailable, match=where):
        dead.put(new_uuid(), ".mp3", DATA)
    key = LocalDiskStorage.key_for(new_uuid(), ".mp3")
    with pytest.raises(StorageUnavailable, match="S3 GET"):
        dead.get(key)
    with pytest.raises(StorageUnavailable, match="S3 DELETE"):
        dead.delete(key)
    # Bounds far above the expected time (refused connections answer at once; a retry backs off
    # for about a second), far below what unconfigured clients take (minutes of retries).
    assert time.monotonic() - started < 20

    with _silent_server() as url:
        hung = S3MediaStorage("cantata-media", PREFIX, **{**s3_server.storage_kwargs(), "endpoint_url": url})
        started = time.monotonic()
        assert hung.writable() is False  # the readiness probe times out on its own one-attempt client
        assert time.monotonic() - started < 4 * PROBE_TIMEOUT


def test_wrong_credentials_are_refused_and_not_writable(s3_server, s3_bucket):
    wrong = S3MediaStorage(s3_bucket, PREFIX, **{**s3_server.storage_kwargs(), "secret_access_key": "not-the-secret"})
    assert wrong.writable() is False
    with pytest.raises(StorageUnavailable, match="SignatureDoesNotMatch"):
        wrong.put(new_uuid(), ".mp3", DATA)
    missing_bucket = S3MediaStorage("cantata-no-such-bucket", **s3_server.storage_kwargs())
    assert missing_bucket.writable() is False


def test_open_media_storage_reads_the_aws_variables(s3_server, s3_bucket, tmp_path, monkeypatch):
    assert isinstance(open_media_storage(None, local_root=tmp_path / "m"), LocalDiskStorage)
    local = open_media_storage(str(tmp_path / "elsewhere"), local_root=tmp_path / "m")
    assert isinstance(local, LocalDiskStorage) and local.root == tmp_path / "elsewhere"
    for bad in ("gs://bucket/x", "s3://Not_A_Bucket/x", "s3://"):
        with pytest.raises(ValueError):
            open_media_storage(bad, local_root=tmp_path)

    for name in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_REGION", s3_server.region)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    storage = open_media_storage(f"s3://{s3_bucket}/{PREFIX}/", local_root=tmp_path, presign=True)
    assert isinstance(storage, S3MediaStorage) and (storage.bucket, storage.prefix) == (s3_bucket, PREFIX)
    assert storage.writable()
    key = storage.put(new_uuid(), ".flac", DATA)
    assert object_keys(s3_server, s3_bucket) == [f"{PREFIX}/{key}"]
    assert httpx.get(storage.presigned_url(key, mime="audio/flac", expires_in=60)).content == DATA


# -- the media route, end to end -------------------------------------------------------------------


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return server_checkpoints(tmp_path_factory)


@contextlib.contextmanager
def s3_app(tmp_path, root, storage: S3MediaStorage):
    """A real Cantata app (tiny checkpoints, CPU) whose engine keeps its media in `storage`."""
    cfg = config(tmp_path, root)
    store = Store(cfg.db_path)
    inputs = InputAudio(store, storage, cfg.outbound_policy(), max_bytes=cfg.max_input_audio_bytes,
                        max_seconds=cfg.max_input_audio_seconds, retention=cfg.result_ttl)
    engine = Engine(store=store, storage=storage, scheduler=Scheduler(cfg.queue_capacity, cfg.max_batch_size, max_padding_waste=0.0),
                    inputs=inputs, loader=pipeline_loader(cfg), models=cfg.models, result_ttl=cfg.result_ttl,
                    sweep_interval=cfg.sweep_interval, shutdown_grace=cfg.shutdown_grace)
    with TestClient(create_app(cfg, engine), base_url="http://localhost:8080") as client:
        wait_for(lambda: client.get("/ready").json()["ready"], 60, "server ready")
        yield client


def only_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert [e["code"] for e in response.json()["errors"]] == [code]


def test_results_and_uploads_are_s3_objects_streamed_by_the_media_route(s3_server, s3_bucket, tmp_path, root,
                                                                         caplog):
    with s3_app(tmp_path, root, storage_for(s3_server, s3_bucket)) as client:
        t = task(ttl=60, outputFormat="WAV")
        item = post(client, [t]).json()["data"][0]
        assert item["status"] == "success", item
        key = LocalDiskStorage.key_for(item["audioUUID"], ".wav")
        assert object_keys(s3_server, s3_bucket) == [f"{PREFIX}/{key}"]
        stored = s3_server.client().get_object(Bucket=s3_bucket, Key=f"{PREFIX}/{key}")["Body"].read()

        url = path_of(item["audioURL"])
        whole = client.get(url)
        assert whole.status_code == 200 and whole.content == stored
        assert whole.headers["content-type"] == "audio/wav" and whole.headers["content-length"] == str(len(stored))
        assert whole.headers["accept-ranges"] == "bytes"
        audio, rate = read_audio(whole.content)
        assert rate == 48000 and audio.shape[0] == 30 * 48000

        part = client.get(url, headers={"Range": "bytes=100-1123"})
        assert part.status_code == 206 and part.content == stored[100:1124]
        assert part.headers["content-range"] == f"bytes 100-1123/{len(stored)}"
        last = client.get(url, headers={"Range": "bytes=-44"})
        assert last.status_code == 206 and last.content == stored[-44:]
        assert client.get(url, headers={"Range": "bytes=0-1,5-9"}).content == stored  # several ranges: whole file
        beyond = client.get(url, headers={"Range": f"bytes={len(stored)}-"})
        assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(stored)}"
        head = client.head(url)
        assert head.status_code == 200 and head.headers["content-length"] == str(len(stored)) and head.content == b""

        # An upload is an object too, served back byte for byte.
        data_uri = "data:audio/wav;base64," + base64.b64encode(stored).decode()
        up = post(client, [{"taskType": "mediaStorage", "taskUUID": new_uuid(), "operation": "upload",
                            "media": data_uri}]).json()["data"][0]
        up_key = LocalDiskStorage.key_for(up["mediaUUID"], ".wav")
        assert f"{PREFIX}/{up_key}" in object_keys(s3_server, s3_bucket)
        assert client.get(path_of(up["mediaURL"])).content == stored

        # Expiry: mediaExpired once the ttl is over; the sweep deletes the object from the bucket.
        engine = client.app.state.cantata.engine
        real_clock = engine.clock
        engine.clock = lambda: real_clock() + 61
        try:
            only_error(client.get(url), 404, "mediaExpired")
            engine.sweep()
            only_error(client.get(url), 404, "mediaNotFound")
        finally:
            engine.clock = real_clock
        assert f"{PREFIX}/{key}" not in object_keys(s3_server, s3_bucket)

        # An object gone from the bucket behind the server's back answers mediaNotFound too.
        s3_server.client().delete_object(Bucket=s3_bucket, Key=f"{PREFIX}/{up_key}")
        only_error(client.get(path_of(up["mediaURL"])), 404, "mediaNotFound")

        # A storage that fails (here: its bucket is gone) is a 503 and not ready; the cause is logged.
        again = post(client, [{"taskType": "mediaStorage", "taskUUID": new_uuid(), "operation": "upload",
                               "media": data_uri}]).json()["data"][0]
        s3_server.client().delete_bucket(Bucket=s3_bucket)
        gone = client.get(path_of(again["mediaURL"]))
        only_error(gone, 503, "serviceUnavailable")
        assert s3_bucket not in gone.text and s3_server.endpoint_url not in gone.text
        assert any("media.storage_unavailable" in r.message and "NoSuchBucket" in r.message for r in caplog.records)
        assert client.get("/ready").status_code == 503


def test_presign_mode_redirects_to_a_short_lived_s3_url(s3_server, s3_bucket, tmp_path, root):
    with s3_app(tmp_path, root, storage_for(s3_server, s3_bucket, presign=True)) as client:
        item = post(client, [task(outputFormat="MP3")]).json()["data"][0]
        assert item["status"] == "success", item
        key = LocalDiskStorage.key_for(item["audioUUID"], ".mp3")
        stored = s3_server.client().get_object(Bucket=s3_bucket, Key=f"{PREFIX}/{key}")["Body"].read()

        redirect = client.get(path_of(item["audioURL"]), follow_redirects=False)
        assert redirect.status_code == 307 and redirect.headers["cache-control"] == "no-store"
        location = redirect.headers["location"]
        assert location.startswith(f"{s3_server.endpoint_url}/{s3_bucket}/{PREFIX}/{key}?")
        assert httpx.URL(location).params["X-Amz-Expires"] == "3600"  # the route's cap (result ttl is a day)
        direct = httpx.get(location)
        assert direct.status_code == 200 and direct.content == stored
        assert direct.headers["content-type"] == "audio/mpeg"
        read_audio(direct.content)  # a playable file
