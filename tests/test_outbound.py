"""cantata.outbound against real HTTP servers on 127.0.0.1 (no internet needed)."""

import asyncio
import contextlib
import shutil
import random
import socket
import ssl
import subprocess
import threading
import time

import httpcore
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from cantata.outbound import (
    USER_AGENT,
    OutboundError,
    OutboundPolicy,
    check_url,
    retry_delay,
    fetch_bytes,
    fetch_bytes_sync,
    is_retryable,
    post_json,
    put_bytes,
)
from unavailable import under_ci

pytestmark = pytest.mark.anyio

LOCAL = OutboundPolicy(allowed_hosts=("127.0.0.1",))
MB = 2**20


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Server:
    """A tiny app that records what reaches it."""

    def __init__(self):
        self.seen: list[dict] = []
        self.hits: dict[str, int] = {}
        self.port = 0

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def app(self) -> Starlette:
        async def record(request: Request) -> None:
            self.seen.append({"method": request.method, "path": request.url.path, "body": await request.body(),
                              "headers": dict(request.headers)})

        async def hello(request):
            await record(request)
            return Response(b"RIFF....WAVE", media_type="audio/wav")

        async def echo(request):
            await record(request)
            return JSONResponse({"ok": True}, status_code=201)

        async def status(request):
            await record(request)
            key = request.url.path
            self.hits[key] = self.hits.get(key, 0) + 1
            failures = int(request.query_params.get("fail", "1000000"))
            code = int(request.path_params["code"]) if self.hits[key] <= failures else 200
            return PlainTextResponse(str(code), status_code=code)

        async def redirect(request):
            await record(request)
            return RedirectResponse(request.query_params["to"], status_code=302)

        async def big(request):
            await record(request)
            size = int(request.query_params["size"])
            chunk = b"x" * 65536

            async def body():
                for _ in range(size // len(chunk)):
                    yield chunk

            headers = {"Content-Length": str(size)} if request.query_params.get("length") else {}
            return StreamingResponse(body(), headers=headers)

        async def slow(request):
            await record(request)
            await asyncio.sleep(3)
            return PlainTextResponse("late")

        async def drip(request):
            await record(request)

            async def body():
                for _ in range(100):
                    yield b"x"
                    await asyncio.sleep(0.05)

            return StreamingResponse(body())

        return Starlette(routes=[
            Route("/hello", hello), Route("/echo", echo, methods=["POST", "PUT"]),
            Route("/status/{code:int}", status, methods=["GET", "POST"]), Route("/redirect", redirect),
            Route("/big", big), Route("/slow", slow, methods=["GET", "POST"]),
            Route("/drip", drip),
        ])


@pytest.fixture(scope="module")
def server():
    srv = Server()
    sock = socket.create_server(("127.0.0.1", 0))
    srv.port = sock.getsockname()[1]
    config = uvicorn.Config(srv.app(), log_level="warning", timeout_graceful_shutdown=1, lifespan="off")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.01)
    yield srv
    uv.should_exit = True
    thread.join(5)


@pytest.fixture
def connects(monkeypatch) -> list[str]:
    """Every address a TCP connection is actually attempted to."""
    attempted = []
    real = httpcore.AnyIOBackend.connect_tcp

    async def spy(self, host, port, *args, **kwargs):
        attempted.append(host)
        return await real(self, host, port, *args, **kwargs)

    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", spy)
    return attempted


@pytest.fixture
def fake_dns(monkeypatch) -> dict[str, str]:
    """Host names mapped to addresses of the test's choosing, everything else resolved normally."""
    table: dict[str, str] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in table:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (table[host], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


# --- refusals ---------------------------------------------------------------------------------

REFUSED_HOSTS = [
    "127.0.0.1", "localhost", "[::1]", "10.0.0.5", "172.16.3.4", "192.168.1.1", "169.254.169.254",
    "[::ffff:127.0.0.1]", "[::ffff:a00:5]", "0.0.0.0", "100.64.0.1", "100.100.100.200",
    "[fd00:ec2::254]", "[fc00::1]", "[fe80::1]", "224.0.0.1", "240.0.0.1", "[64:ff9b::7f00:1]",
    "2130706433",  # 127.0.0.1 as a decimal number: a host name to httpx, loopback to getaddrinfo
]


@pytest.mark.parametrize("host", REFUSED_HOSTS)
async def test_default_policy_refuses_non_public_addresses_before_connecting(server, connects, host):
    seen = len(server.seen)
    with pytest.raises(OutboundError) as err:
        await fetch_bytes(server.url("/hello", host), OutboundPolicy())
    assert err.value.code == "urlNotAllowed"
    assert "refusing to connect to" in str(err.value)
    assert connects == [] and len(server.seen) == seen


async def test_localhost_is_refused_at_connect_time_with_the_resolved_address(server, connects):
    with pytest.raises(OutboundError, match=r"refusing to connect to (127\.0\.0\.1|::1) \(loopback address\) "
                                             r"for http://localhost:\d+/hello") as err:
        await fetch_bytes(server.url("/hello", "localhost"), OutboundPolicy())
    assert err.value.code == "urlNotAllowed" and connects == []


@pytest.mark.parametrize("policy", [LOCAL, OutboundPolicy(allow_private=True),
                                    OutboundPolicy(allowed_hosts=["127.0.0.0/8"])], ids=str)
async def test_allowed_local_addresses_work(server, policy):
    body, content_type = await fetch_bytes(server.url("/hello"), policy)
    assert (body, content_type) == (b"RIFF....WAVE", "audio/wav")
    assert server.seen[-1]["headers"]["user-agent"] == USER_AGENT


@pytest.mark.parametrize("policy", [OutboundPolicy(allow_private=True), OutboundPolicy(allowed_hosts=("LocalHost",))])
async def test_localhost_works_when_allowed(server, policy):
    assert (await fetch_bytes(server.url("/hello", "localhost"), policy))[0] == b"RIFF....WAVE"


async def test_allow_private_still_refuses_cloud_metadata(connects):
    for url in ("http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://100.100.100.200/"):
        with pytest.raises(OutboundError, match="cloud metadata address"):
            await fetch_bytes(url, OutboundPolicy(allow_private=True))
    assert connects == []


async def test_dns_rebinding_to_a_private_address_is_refused(server, connects, fake_dns):
    fake_dns["hooks.example.com"] = "10.1.2.3"
    with pytest.raises(OutboundError, match=r"10\.1\.2\.3 \(private address\) for http://hooks\.example\.com") as err:
        await post_json("http://hooks.example.com/hook", {"a": 1}, OutboundPolicy())
    assert err.value.code == "urlNotAllowed" and connects == []


async def test_connection_goes_to_the_checked_address_but_keeps_the_host_name(server, connects, fake_dns):
    fake_dns["hooks.example.com"] = "127.0.0.1"
    await fetch_bytes(server.url("/hello", "hooks.example.com"), LOCAL)
    assert connects == ["127.0.0.1"]
    assert server.seen[-1]["headers"]["host"] == f"hooks.example.com:{server.port}"


@pytest.mark.skipif(not shutil.which("openssl") and not under_ci(), reason="needs the openssl CLI to make a certificate")
async def test_tls_sends_the_host_name_as_sni_and_verifies_the_certificate(tmp_path, fake_dns):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=hooks.example.com", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    sni = []
    context.sni_callback = lambda _sock, name, _ctx: sni.append(name)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = listener.accept()
        with conn, contextlib.suppress(ssl.SSLError, OSError):
            context.wrap_socket(conn, server_side=True)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    fake_dns["hooks.example.com"] = "127.0.0.1"
    url = f"https://hooks.example.com:{listener.getsockname()[1]}/x"
    with pytest.raises(OutboundError, match="CERTIFICATE_VERIFY_FAILED") as err:
        await fetch_bytes(url, LOCAL)  # self-signed: a verifying client must refuse it
    thread.join(5)
    listener.close()
    assert err.value.code == "urlUnreachable"
    assert sni == ["hooks.example.com"]


async def test_redirect_to_a_refused_address_is_refused(server, connects, fake_dns):
    fake_dns["internal.example"] = "10.0.0.7"
    for target in ("http://169.254.169.254/latest/meta-data/", "http://internal.example/admin"):
        seen = len(server.seen)
        with pytest.raises(OutboundError, match=f"refusing to connect .* for {target}") as err:
            await fetch_bytes(server.url(f"/redirect?to={target}"), LOCAL)
        assert err.value.code == "urlNotAllowed"
        assert len(server.seen) == seen + 1  # the redirect itself, nothing after it
    assert set(connects) == {"127.0.0.1"}


async def test_redirects_are_followed_up_to_the_limit(server):
    hello = server.url("/hello")
    assert (await fetch_bytes(server.url(f"/redirect?to={hello}"), LOCAL))[0] == b"RIFF....WAVE"
    assert (await fetch_bytes(server.url("/redirect?to=/hello"), LOCAL))[0] == b"RIFF....WAVE"
    chain = hello
    for _ in range(3):
        chain = server.url(f"/redirect?to={chain}")
    policy = OutboundPolicy(allowed_hosts=("127.0.0.1",), max_redirects=2)
    with pytest.raises(OutboundError, match="more than 2 redirects") as err:
        await fetch_bytes(chain, policy)
    assert (err.value.code, err.value.status_code) == ("urlHttpError", 302)
    with pytest.raises(OutboundError, match="scheme") as err:
        await fetch_bytes(server.url("/redirect?to=file:///etc/passwd"), LOCAL)
    assert err.value.code == "urlNotAllowed"


async def test_env_proxy_is_ignored(server, monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    assert (await fetch_bytes(server.url("/hello"), LOCAL))[0] == b"RIFF....WAVE"


# --- limits -----------------------------------------------------------------------------------


@pytest.fixture
def received(monkeypatch) -> list[int]:
    """Sizes of the reads from the client's sockets: what the client actually took in."""
    reads = []
    real = httpcore._backends.anyio.AnyIOStream.read

    async def spy(self, max_bytes, timeout=None):
        data = await real(self, max_bytes, timeout)
        reads.append(len(data))
        return data

    monkeypatch.setattr(httpcore._backends.anyio.AnyIOStream, "read", spy)
    return reads


@pytest.mark.parametrize("declared", [False, True], ids=["streamed", "content-length"])
async def test_size_cap_stops_reading_early(server, received, declared):
    policy = OutboundPolicy(allowed_hosts=("127.0.0.1",), max_download_bytes=MB)
    with pytest.raises(OutboundError, match="byte limit") as err:
        await fetch_bytes(server.url(f"/big?size={10 * MB}" + ("&length=1" if declared else "")), policy)
    assert err.value.code == "urlTooLarge"
    assert sum(received) < (MB if declared else 2 * MB)  # stopped at the cap, not after 10 MB


async def test_body_at_the_cap_is_accepted(server):
    policy = OutboundPolicy(allowed_hosts=("127.0.0.1",), max_download_bytes=MB)
    body, _ = await fetch_bytes(server.url(f"/big?size={MB}&length=1"), policy)
    assert len(body) == MB


async def test_slow_server_times_out(server):
    policy = OutboundPolicy(allowed_hosts=("127.0.0.1",), total_timeout=0.3)
    started = time.monotonic()
    for call in (lambda: fetch_bytes(server.url("/slow"), policy),
                 lambda: post_json(server.url("/slow"), {}, policy)):
        with pytest.raises(OutboundError) as err:
            await call()
        assert err.value.code == "urlTimeout"
    assert time.monotonic() - started < 2


async def test_total_deadline_bounds_a_dripping_body(server):
    policy = OutboundPolicy(allowed_hosts=("127.0.0.1",), total_timeout=0.4)  # each read is fast enough
    started = time.monotonic()
    with pytest.raises(OutboundError, match="took longer than 0.4 s") as err:
        await fetch_bytes(server.url("/drip"), policy)
    assert err.value.code == "urlTimeout" and time.monotonic() - started < 1


async def test_unreachable_and_http_errors():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(OutboundError) as err:
        await fetch_bytes(f"http://127.0.0.1:{port}/", LOCAL)  # nothing listens there
    assert err.value.code == "urlUnreachable"
    with pytest.raises(OutboundError) as err:
        await fetch_bytes("http://no-such-host.invalid/", OutboundPolicy())
    assert err.value.code == "urlUnreachable"


async def test_http_error_status_is_reported(server):
    with pytest.raises(OutboundError, match="answered HTTP 404") as err:
        await fetch_bytes(server.url("/status/404"), LOCAL)
    assert (err.value.code, err.value.status_code) == ("urlHttpError", 404)


def test_fetch_bytes_sync(server):
    assert fetch_bytes_sync(server.url("/hello"), LOCAL) == (b"RIFF....WAVE", "audio/wav")
    with pytest.raises(OutboundError, match="loopback"):
        fetch_bytes_sync(server.url("/hello", "localhost"), OutboundPolicy())


# --- webhooks and uploads ---------------------------------------------------------------------


async def test_post_json_delivers_the_payload(server):
    status = await post_json(server.url("/echo"), {"data": [{"taskUUID": "u"}]}, LOCAL,
                             headers={"X-Signature": "sig"})
    request = server.seen[-1]
    assert status == 201
    assert request["method"] == "POST" and request["body"] == b'{"data":[{"taskUUID":"u"}]}'
    assert request["headers"]["content-type"] == "application/json"
    assert request["headers"]["x-signature"] == "sig"


async def test_put_bytes_uploads_the_raw_body(server):
    status = await put_bytes(server.url("/echo"), b"\x00ID3audio", "audio/mpeg", LOCAL)
    request = server.seen[-1]
    assert status == 201
    assert (request["method"], request["body"]) == ("PUT", b"\x00ID3audio")
    assert request["headers"]["content-type"] == "audio/mpeg"


async def test_post_does_not_follow_redirects(server):
    with pytest.raises(OutboundError) as err:
        await post_json(server.url(f"/redirect?to={server.url('/echo')}"), {}, LOCAL)
    assert (err.value.code, err.value.status_code) == ("urlHttpError", 405)  # GET-only route answers 405


# --- retries ----------------------------------------------------------------------------------


def test_retry_delay_is_jittered_exponential_backoff_under_a_cap():
    random.seed(7)
    for attempt, cap in ((0, 2), (1, 4), (2, 8), (5, 60), (9, 60)):
        delays = [retry_delay(attempt, base_delay=2, max_delay=60) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays) and max(delays) > cap * 0.9  # full jitter up to the cap


@pytest.mark.parametrize("code,status,retry", [
    ("urlUnreachable", None, True), ("urlTimeout", None, True), ("urlHttpError", 500, True),
    ("urlHttpError", 429, True), ("urlHttpError", 408, True), ("urlHttpError", 404, False),
    ("urlNotAllowed", None, False), ("urlTooLarge", None, False),
])
def test_is_retryable(code, status, retry):
    assert is_retryable(OutboundError(code, "x", status_code=status)) is retry


# --- check_url --------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "ftp://example.com/a.mp3", "file:///etc/passwd", "http://user:s3cret@example.com/a", "https://s3cret@example.com/",
    "http:///path", "http://", "//example.com/a", "not a url", "http://[::1]/", "http://10.1.2.3/",
    "gopher://example.com/",
])
def test_check_url_rejects(url):
    with pytest.raises(OutboundError) as err:
        check_url(url, OutboundPolicy())
    assert err.value.code == "urlNotAllowed"
    assert "s3cret" not in str(err.value)


@pytest.mark.parametrize("url", ["https://example.com/a.mp3", "http://8.8.8.8:8080/x", "http://localhost/"])
def test_check_url_accepts(url):
    check_url(url, OutboundPolicy())  # host names are judged at connect time


def test_policy_validates_networks():
    with pytest.raises(ValueError, match="not a valid network"):
        OutboundPolicy(allowed_hosts=("10.0.0.0/33",))
