"""Outbound HTTP to user-supplied URLs: input audio downloads, webhook POSTs, upload PUTs.

Every URL here comes from a client, so the server must not become a proxy into its own network
(SSRF). The rule: only public unicast addresses, unless the deployment's `OutboundPolicy` says
otherwise. It is enforced where it cannot be dodged, at TCP connect time on the resolved IP:
`_GuardedBackend` is the httpcore network backend under the httpx client, it resolves the host
itself, checks every address and connects to a checked IP. A name that resolves to an internal
address (DNS rebinding) or a redirect to one is refused like a literal internal URL, while TLS
SNI, certificate host name checks and the Host header still use the URL's host name, because
httpcore hands that name to `start_tls` and the request, not the address we connected to.

`check_url` is the cheap syntactic part of the same rule; `check_destination` adds a bounded DNS
lookup, so a task is refused at submission when its URLs resolve to refused addresses.
Every call also has a connect timeout, a total deadline and (for downloads) a size cap.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import itertools
import random
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import anyio
import httpcore
import httpx

from cantata import __version__
from cantata.errors import CantataError

USER_AGENT = f"cantata/{__version__}"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Instance metadata and container credential services (AWS/GCP/Azure/OpenStack, AWS IPv6, Alibaba;
#: the ECS task credentials endpoint and the EKS Pod Identity agent over IPv4 and IPv6): credentials
#: live there, so `allow_private` does not open them; only an explicit `allowed_hosts` entry does.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200",
                                      "169.254.170.2", "169.254.170.23", "fd00:ec2::23")
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class OutboundPolicy:
    """What the server may connect to, and how long and how much it may read."""

    allow_private: bool = False  # every non-public address except cloud metadata (local development)
    # Host names (trusted wherever they resolve), addresses or CIDR networks allowed even if private.
    allowed_hosts: tuple[str, ...] = ()
    connect_timeout: float = 5.0
    total_timeout: float = 30.0
    max_download_bytes: int = 50 * 2**20
    max_redirects: int = 3
    allowed_schemes: tuple[str, ...] = ("http", "https")

    def __post_init__(self) -> None:
        # Config files give lists; tuples keep the policy hashable. Parsing now fails bad CIDRs at startup.
        object.__setattr__(self, "allowed_hosts", tuple(self.allowed_hosts))
        object.__setattr__(self, "allowed_schemes", tuple(self.allowed_schemes))
        _allow_list(self.allowed_hosts)


class OutboundError(CantataError):
    """A refused or failed outbound call. `code` is what the API reports:

    urlNotAllowed, urlUnreachable, urlTimeout, urlTooLarge, urlHttpError (with `status_code`).
    """

    def __init__(self, code: str, message: str, *, parameter: str | None = None,
                 status_code: int | None = None) -> None:
        super().__init__(code, message, parameter=parameter)
        self.status_code = status_code


class _Refused(Exception):
    """Raised inside httpx by the backend; turned into urlNotAllowed once the URL is known."""


# --- the address rule -------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _allow_list(entries: tuple[str, ...]) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    """Split `allowed_hosts` into host names and networks (an address is a one-address network)."""
    names, networks = set(), []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            if "/" in entry:
                raise ValueError(f"allowed_hosts: {entry!r} is not a valid network") from None
            names.add(_normal_host(entry))
    return frozenset(names), tuple(networks)


def _normal_host(host: str) -> str:
    return host.lower().rstrip(".")


def _unwrapped(addr: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one merely carries (mapped, NAT64, 6to4), so IPv4 rules apply to it."""
    if addr.version == 6:
        if addr.ipv4_mapped:
            return addr.ipv4_mapped
        if addr in _NAT64:
            return ipaddress.IPv4Address(int(addr) & 0xFFFF_FFFF)
        if addr.sixtofour:
            return addr.sixtofour
    return addr


def _non_public_kind(addr: IPAddress) -> str | None:
    """What kind of non-public address `addr` is, or None for an ordinary public unicast address."""
    kinds = (
        ("cloud metadata", addr in METADATA_ADDRESSES),
        ("loopback", addr.is_loopback),
        ("unspecified", addr.is_unspecified),
        ("link-local", addr.is_link_local),
        ("multicast", addr.is_multicast),
        ("private", addr.is_private),
        ("shared CGNAT", addr in _CGNAT),
        ("reserved", addr.is_reserved),
        ("non-public", not addr.is_global),
    )
    return next((kind for kind, hit in kinds if hit), None)


def _refusal(addr: IPAddress, policy: OutboundPolicy) -> str | None:
    """Why the policy refuses `addr` (e.g. "private address"), or None if it may be used."""
    addr = _unwrapped(addr)
    if any(addr in net for net in _allow_list(policy.allowed_hosts)[1]):
        return None
    kind = _non_public_kind(addr)
    if kind is None or (policy.allow_private and addr not in METADATA_ADDRESSES):
        return None
    return f"{kind} address"


def _allowed_by_name(host: str, policy: OutboundPolicy) -> bool:
    return _normal_host(host) in _allow_list(policy.allowed_hosts)[0]


def _checked_addresses(host: str, port: int, policy: OutboundPolicy) -> list[str]:
    """Resolve `host` and return its addresses, refusing if ANY is disallowed (no partial trust)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not _allowed_by_name(host, policy):
        for address in addresses:
            if reason := _refusal(ipaddress.ip_address(address), policy):
                raise _Refused(f"refusing to connect to {address} ({reason})")
    return addresses


def check_url(url: str, policy: OutboundPolicy) -> None:
    """Syntactic pre-check for request validation: scheme, host, no credentials, allowed IP literal.

    It parses with httpx, like the client that will fetch the URL, so both agree on the host.
    Host names are checked later, at connect time, on what they resolve to.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise OutboundError("urlNotAllowed", f"not a valid URL: {url!r} ({exc})") from None
    if parsed.scheme not in policy.allowed_schemes:
        allowed = ", ".join(policy.allowed_schemes)
        raise OutboundError("urlNotAllowed", f"URL scheme must be one of {allowed}: {url!r}")
    if not parsed.host:
        raise OutboundError("urlNotAllowed", f"URL has no host: {url!r}")
    if parsed.userinfo:  # the message leaves the URL out: it holds a password
        raise OutboundError("urlNotAllowed", f"URLs with credentials (user:password@) are not allowed "
                                             f"(host {parsed.host})")
    try:
        literal = ipaddress.ip_address(parsed.host)
    except ValueError:
        return
    if reason := _refusal(literal, policy):
        raise OutboundError("urlNotAllowed", f"refusing to connect to {literal} ({reason}) for {url}")


async def check_destination(url: str, policy: OutboundPolicy) -> None:
    """`check_url`, plus the address rule applied now to what the host name resolves to, so a URL
    that could only ever be refused at delivery (`localhost`, loopback spelled `127.1` or
    `2130706433`) is refused when the task is submitted. The lookup runs in a thread, bounded by
    the connect timeout; a name that does not resolve yet passes (delivery resolves it again and
    the connect-time check still has the last word)."""
    check_url(url, policy)
    parsed = httpx.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with anyio.fail_after(policy.connect_timeout):
            await anyio.to_thread.run_sync(_checked_addresses, parsed.host, port, policy, abandon_on_cancel=True)
    except _Refused as exc:
        raise OutboundError("urlNotAllowed", f"{exc} for {url}") from None
    except (TimeoutError, httpcore.ConnectError):
        return


# --- httpx wiring -----------------------------------------------------------------------------


class _GuardedBackend(httpcore.AnyIOBackend):
    """AnyIO backend that connects only to resolved addresses the policy allows."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self._policy = policy

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options=None) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await anyio.to_thread.run_sync(
                    _checked_addresses, host, port, self._policy, abandon_on_cancel=True)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        error = None
        for address in addresses:  # like socket.create_connection: first one that answers
            try:
                return await super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                error = exc
        raise error


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """httpx's default verifying context (certifi CAs, host name check), built once."""
    return httpx.create_ssl_context(trust_env=False)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (request mapping, httpcore error mapping) over a guarded pool.

    httpx 0.28 has no public parameter for httpcore's `network_backend`, so the pool httpx
    built is replaced by an equivalent `httpcore.AsyncConnectionPool` that has one; the
    transport talks to nothing but `self._pool`.
    """

    def __init__(self, policy: OutboundPolicy) -> None:
        super().__init__(verify=_ssl_context(), trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=_ssl_context(), network_backend=_GuardedBackend(policy))


def _client(policy: OutboundPolicy) -> httpx.AsyncClient:
    """A client for one call. trust_env=False: an HTTP(S)_PROXY from the environment would
    otherwise be mounted in front of the guarded transport and make the proxy do the connecting."""
    return httpx.AsyncClient(
        transport=_GuardedTransport(policy),
        timeout=httpx.Timeout(policy.total_timeout, connect=policy.connect_timeout),
        headers={"User-Agent": USER_AGENT},
        follow_redirects=False,  # redirects are followed by hand, re-checking each hop's URL
        trust_env=False,
    )


@contextlib.contextmanager
def _deadline(url: str, policy: OutboundPolicy) -> Iterator[None]:
    """Bound the whole call, not just each read: a server dripping bytes can't hold us forever."""
    try:
        with anyio.fail_after(policy.total_timeout):
            yield
    except TimeoutError:
        raise OutboundError("urlTimeout", f"{url} took longer than {policy.total_timeout:g} s") from None


@contextlib.contextmanager
def _errors(url: str) -> Iterator[None]:
    """Translate httpx failures into the codes the API reports."""
    try:
        yield
    except _Refused as exc:
        raise OutboundError("urlNotAllowed", f"{exc} for {url}") from None
    except httpx.TimeoutException as exc:
        raise OutboundError("urlTimeout", f"timed out talking to {url}") from exc
    except httpx.RequestError as exc:
        raise OutboundError("urlUnreachable", f"cannot reach {url}: {exc}") from exc


def _raise_for_status(response: httpx.Response, url: str) -> None:
    if not response.is_success:
        raise OutboundError("urlHttpError", f"{url} answered HTTP {response.status_code}",
                            status_code=response.status_code)


def _redirect_target(response: httpx.Response, url: str, hop: int, policy: OutboundPolicy) -> str | None:
    """The URL a redirect points to, or None if `response` is the final one (which must be 2xx)."""
    if not response.has_redirect_location:
        _raise_for_status(response, url)
        return None
    if hop == policy.max_redirects:
        raise OutboundError("urlHttpError", f"{url}: more than {policy.max_redirects} redirects",
                            status_code=response.status_code)
    return str(response.url.join(response.headers["Location"]))


async def _read_capped(response: httpx.Response, url: str, policy: OutboundPolicy) -> bytes:
    """Read the body, giving up as soon as it is known to exceed the cap."""
    cap = policy.max_download_bytes
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > cap:
        raise OutboundError("urlTooLarge", f"{url} is {declared} bytes, over the {cap} byte limit")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > cap:
            raise OutboundError("urlTooLarge", f"{url} is over the {cap} byte limit")
    return bytes(body)


# --- public calls -----------------------------------------------------------------------------


async def fetch_bytes(url: str, policy: OutboundPolicy) -> tuple[bytes, str | None]:
    """GET `url` (following up to `max_redirects` redirects); returns (body, content-type)."""
    # Audio is already compressed. Asking for identity means the cap counts the bytes sent, and no
    # small gzip body inflates far past it in a single decoded chunk.
    headers = {"Accept-Encoding": "identity"}
    async with _client(policy) as client:
        with _deadline(url, policy):
            for hop in itertools.count():  # ends in a return, or _redirect_target raises
                check_url(url, policy)
                with _errors(url):
                    async with client.stream("GET", url, headers=headers) as response:
                        next_url = _redirect_target(response, url, hop, policy)
                        if next_url is None:
                            body = await _read_capped(response, url, policy)
                            return body, response.headers.get("Content-Type")
                url = next_url


def fetch_bytes_sync(url: str, policy: OutboundPolicy) -> tuple[bytes, str | None]:
    """fetch_bytes for threads without an event loop (same checks and deadline, on a private loop)."""
    return anyio.run(fetch_bytes, url, policy)


async def _send(method: str, url: str, policy: OutboundPolicy, **request) -> int:
    """One request, no redirects (a 3xx is an error: re-sending a body elsewhere surprises the
    receiver). The response body is never read, so its size does not matter."""
    check_url(url, policy)
    async with _client(policy) as client:
        with _deadline(url, policy), _errors(url):
            async with client.stream(method, url, **request) as response:
                _raise_for_status(response, url)
                return response.status_code


async def post_json(url: str, payload: dict | list, policy: OutboundPolicy, *,
                    headers: dict | None = None) -> int:
    """Deliver a webhook; returns the 2xx status, raises OutboundError otherwise."""
    return await _send("POST", url, policy, json=payload, headers=headers)


async def put_bytes(url: str, data: bytes, content_type: str, policy: OutboundPolicy) -> int:
    """Upload raw bytes to a client's upload endpoint; returns the 2xx status."""
    return await _send("PUT", url, policy, content=data, headers={"Content-Type": content_type})


def is_retryable(error: OutboundError) -> bool:
    """Transient failures: network trouble, timeouts, 5xx, 408 and 429. Refusals and other 4xx
    will fail the same way again."""
    if error.code in ("urlUnreachable", "urlTimeout"):
        return True
    status = error.status_code or 0
    return error.code == "urlHttpError" and (status >= 500 or status in (408, 429))


def retry_delay(attempt: int, *, base_delay: float, max_delay: float = 60.0) -> float:
    """Seconds to wait after failed attempt number `attempt` (0-based): exponential backoff with
    full jitter, so deliveries that failed together don't retry in step."""
    return random.uniform(0, min(max_delay, base_delay * 2**attempt))
