"""fetch_to_file against aiohttp servers on loopback.

Every address used here is in 127.0.0.0/8 or ::1: refusals of other networks
are covered by the pure policy tests in test_urlpolicy.py.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.core.errors import ApiError
from workers import fetch
from workers.fetch import FetchResult, PeerGuard, PeerRefusedError, PinnedResolver, fetch_to_file

LOOPBACK = (ip_network("127.0.0.0/8"),)
ONLY_127_0_0_1 = (ip_network("127.0.0.1/32"),)
RELEASE = web.AppKey("release", asyncio.Event)


@dataclass
class Origin:
    server: TestServer
    hits: list[web.Request] = field(default_factory=list)

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    def url(self, path: str = "/") -> str:
        return str(self.server.make_url(path))


Serve = Callable[..., Awaitable[Origin]]


@pytest.fixture
async def serve(aiohttp_server: Any) -> AsyncIterator[Serve]:
    release = asyncio.Event()  # lets handlers that stall return at teardown

    async def start(*routes: web.RouteDef, host: str = "127.0.0.1") -> Origin:
        hits: list[web.Request] = []

        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            hits.append(request)
            return await handler(request)

        app = web.Application(middlewares=[record])
        app[RELEASE] = release
        app.add_routes(routes)
        return Origin(await aiohttp_server(app, host=host), hits)

    yield start
    release.set()


def _answer(body: bytes) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body)

    return handler


async def _echo_host(request: web.Request) -> web.Response:
    return web.Response(body=request.host.encode())


async def _get(url: str, **kwargs: Any) -> tuple[FetchResult, bytes]:
    buf = io.BytesIO()
    result = await fetch_to_file(url, buf, **{"max_bytes": 10_000_000, "allow_cidrs": LOOPBACK, **kwargs})
    return result, buf.getvalue()


async def _refusal(url: str, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await _get(url, **kwargs)
    assert caught.value.field == "url"
    return caught.value


def _fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[list[str]]]) -> list[str]:
    """Make the loop resolve each name to its next answer (the last one repeats); returns the queries."""
    queries: list[str] = []

    async def getaddrinfo(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        queries.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        addresses = answers[host][min(queries.count(host), len(answers[host])) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    return queries


# -- downloading -------------------------------------------------------------


async def test_fetches_file_byte_exact(serve: Serve) -> None:
    body = os.urandom(700_000)  # several write batches

    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            body=body,
            headers={
                "Content-Type": "Application/PDF; charset=binary",
                "Content-Disposition": 'attachment; filename="report.pdf"',
            },
        )

    origin = await serve(web.get("/download", handler))
    result, data = await _get(origin.url("/download"))

    assert data == body
    assert result == FetchResult(
        final_url=origin.url("/download"), size=len(body), content_type="application/pdf", filename="report.pdf"
    )
    [request] = origin.hits
    assert request.headers["Accept-Encoding"] == "identity"
    assert request.headers["User-Agent"] == "attachd/0.1"


async def test_filename_star_wins(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.Response:
        disposition = "attachment; filename=\"resume.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"
        return web.Response(body=b"x", headers={"Content-Disposition": disposition})

    origin = await serve(web.get("/", handler))
    result, _ = await _get(origin.url("/"))
    assert result.filename == "résumé.pdf"


@pytest.mark.parametrize(("path", "filename"), [("/files/my%20notes.txt", "my notes.txt"), ("/", None)])
async def test_filename_from_url_path(serve: Serve, path: str, filename: str | None) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b"notes")

    origin = await serve(web.get("/{tail:.*}", handler))
    result, data = await _get(origin.url(path))
    assert (result.filename, result.content_type, data) == (filename, "application/octet-stream", b"notes")


async def test_writes_off_the_event_loop(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b"y" * 300_000)

    class RecordingFile(io.BytesIO):
        def __init__(self) -> None:
            super().__init__()
            self.threads: set[int] = set()

        def write(self, data: Any) -> int:
            self.threads.add(threading.get_ident())
            return super().write(data)

    origin = await serve(web.get("/", handler))
    out = RecordingFile()
    result = await fetch_to_file(origin.url("/"), out, max_bytes=1_000_000, allow_cidrs=LOOPBACK)
    assert result.size == len(out.getvalue()) == 300_000
    assert out.threads and threading.get_ident() not in out.threads


async def test_legacy_ipv4_literal_is_fetched_in_canonical_form(serve: Serve) -> None:
    origin = await serve(web.get("/", _echo_host))
    for host in ("127.1", "2130706433", "0x7f.0.0.1"):
        _, data = await _get(f"http://{host}:{origin.port}/")
        assert data == f"127.0.0.1:{origin.port}".encode()


# -- redirects ---------------------------------------------------------------


def _redirect_chain(status: int = 302) -> web.RouteDef:
    async def handler(request: web.Request) -> web.Response:
        left = int(request.match_info["left"])
        if left == 0:
            return web.Response(body=b"arrived")
        # Alternate relative and absolute Locations.
        location = f"/hop/{left - 1}" if left % 2 else str(request.url.with_path(f"/hop/{left - 1}"))
        return web.Response(status=status, headers={"Location": location})

    return web.get("/hop/{left}", handler)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_follows_a_redirect_chain(serve: Serve, status: int) -> None:
    origin = await serve(_redirect_chain(status))
    result, data = await _get(origin.url("/hop/3"))
    assert data == b"arrived"
    assert result.final_url == origin.url("/hop/0")
    assert [r.path for r in origin.hits] == ["/hop/3", "/hop/2", "/hop/1", "/hop/0"]


async def test_max_redirects_is_the_limit(serve: Serve) -> None:
    origin = await serve(_redirect_chain())
    _, data = await _get(origin.url("/hop/5"))
    assert data == b"arrived"

    error = await _refusal(origin.url("/hop/6"))
    assert (error.code, error.status) == ("too_many_redirects", 400)


@pytest.mark.parametrize(
    ("location", "code"),
    [
        ("http://127.0.0.2:{port}/", "url_refused"),
        ("http://[::1]:{port}/", "url_refused"),
        ("http://user:pw@127.0.0.2:{port}/", "invalid_url"),
        ("file:///etc/passwd", "invalid_url"),
    ],
)
async def test_redirect_target_is_checked(serve: Serve, location: str, code: str) -> None:
    second = await serve(web.get("/", _answer(b"secret")), host="127.0.0.2")

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": location.format(port=second.port)})

    first = await serve(web.get("/", handler))
    error = await _refusal(first.url("/"), allow_cidrs=ONLY_127_0_0_1)
    assert error.code == code
    assert len(first.hits) == 1
    assert second.hits == []


# -- size and failures -------------------------------------------------------


async def test_size_cap_while_streaming(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(int(request.query["chunks"])):
            await resp.write(b"z" * 50_000)
        await resp.write_eof()
        return resp

    origin = await serve(web.get("/", handler))
    result, _ = await _get(origin.url("/?chunks=6"), max_bytes=300_000)
    assert result.size == 300_000

    buf = io.BytesIO()
    with pytest.raises(ApiError) as caught:
        await fetch_to_file(origin.url("/?chunks=7"), buf, max_bytes=300_000, allow_cidrs=LOOPBACK)
    assert (caught.value.code, caught.value.status) == ("size_exceeded", 413)
    assert caught.value.message == "the file at url is larger than 300000 bytes"
    assert len(buf.getvalue()) <= 300_000


async def test_size_cap_up_front_from_content_length(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        # Declares more than the cap, then stalls: only an up-front check answers quickly.
        resp = web.StreamResponse(headers={"Content-Length": "1001"})
        await resp.prepare(request)
        await request.app[RELEASE].wait()
        return resp

    origin = await serve(web.get("/", handler))
    error = await _refusal(origin.url("/"), max_bytes=1000, total_timeout=5)
    assert (error.code, error.status) == ("size_exceeded", 413)


async def test_http_error_status(serve: Serve) -> None:
    origin = await serve()
    error = await _refusal(origin.url("/missing"))
    assert (error.code, error.status, error.message) == ("fetch_failed", 422, "fetching url answered HTTP 404")


async def test_encoded_body_is_refused(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b"\x1f\x8b not really", headers={"Content-Encoding": "gzip"})

    origin = await serve(web.get("/", handler))
    error = await _refusal(origin.url("/"))
    assert (error.code, error.status) == ("fetch_failed", 422)


@pytest.mark.parametrize("stall", ["headers", "body"])
async def test_slow_server_times_out(serve: Serve, stall: str) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        if stall == "body":
            await resp.prepare(request)
            await resp.write(b"a little")
        await request.app[RELEASE].wait()
        return resp

    origin = await serve(web.get("/", handler))
    error = await _refusal(origin.url("/"), total_timeout=0.3)
    assert (error.code, error.status) == ("fetch_timeout", 422)


async def test_connection_refused_is_a_short_reason() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = await _refusal(f"http://127.0.0.1:{port}/")
    assert (error.code, error.status) == ("fetch_failed", 422)
    assert error.message == "fetching url failed: connection refused"


async def test_environment_proxy_is_ignored(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = await serve(web.route("*", "/{tail:.*}", _answer(b"via proxy")))
    origin = await serve(web.get("/", _answer(b"direct")))
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy.url("/"))
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)

    _, data = await _get(origin.url("/"))
    assert data == b"direct"
    assert proxy.hits == []


# -- refusals before any request ---------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/",
        "http://[::1]:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://0.0.0.0:{port}/",
        "http://2130706433:{port}/",
        "http://0x7f.1:{port}/",
        "http://localhost:{port}/",
    ],
)
async def test_refused_before_any_request(serve: Serve, url: str) -> None:
    origin = await serve(web.get("/", _answer(b"secret")))
    error = await _refusal(url.format(port=origin.port), allow_cidrs=())
    assert (error.code, error.status) == ("url_refused", 400)
    assert error.message.startswith("the address ")
    assert origin.hits == []


async def test_refused_if_any_resolved_address_is_refused(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    origin = await serve(web.get("/", _answer(b"secret")))
    _fake_dns(monkeypatch, {"mixed.test": [["127.0.0.1", "127.0.0.2"]]})
    error = await _refusal(f"http://mixed.test:{origin.port}/", allow_cidrs=ONLY_127_0_0_1)
    assert (error.code, error.message) == ("url_refused", "the address 127.0.0.2 of mixed.test is not allowed")
    assert origin.hits == []


async def test_unresolvable_host(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_dns(monkeypatch, {})
    error = await _refusal("http://nowhere.test/")
    assert (error.code, error.message) == ("fetch_failed", "fetching url failed: cannot resolve nowhere.test")


# -- pinning and the peer check ----------------------------------------------


async def test_dns_is_resolved_once_and_pinned(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebinding answer after the check is never used: aiohttp connects to the vetted address."""
    origin = await serve(web.get("/", _echo_host))
    queries = _fake_dns(monkeypatch, {"rebind.test": [["127.0.0.1"], ["127.0.0.2"]]})

    _, data = await _get(f"http://rebind.test:{origin.port}/", allow_cidrs=ONLY_127_0_0_1)
    assert data == f"rebind.test:{origin.port}".encode()  # the Host header keeps the name
    assert queries == ["rebind.test"]


async def test_each_redirect_hop_is_resolved_and_vetted(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/next"})

    origin = await serve(web.get("/", handler))
    queries = _fake_dns(monkeypatch, {"rebind.test": [["127.0.0.1"], ["127.0.0.2"]]})
    error = await _refusal(f"http://rebind.test:{origin.port}/", allow_cidrs=ONLY_127_0_0_1)
    assert error.code == "url_refused"
    assert queries == ["rebind.test", "rebind.test"]
    assert [r.path for r in origin.hits] == ["/"]


async def test_pinned_resolver_answers_only_its_host() -> None:
    resolver = PinnedResolver("Pinned.Test.", [ip_address("127.0.0.1"), ip_address("::1")])
    assert [r["host"] for r in await resolver.resolve("pinned.test", 80, socket.AF_UNSPEC)] == ["127.0.0.1", "::1"]
    assert [r["host"] for r in await resolver.resolve("pinned.test", 80, socket.AF_INET6)] == ["::1"]
    with pytest.raises(OSError):
        await resolver.resolve("other.test", 80)


@pytest.mark.parametrize("host", ["pinned.test", "127.0.0.1"])
async def test_peer_guard_refuses_the_socket(serve: Serve, host: str) -> None:
    """The guard stops a connection even when resolution hands out a refused address,
    and for IP literals, which aiohttp connects to without asking the resolver."""
    origin = await serve(web.get("/", _answer(b"secret")))
    guard = PeerGuard(())
    connector = aiohttp.TCPConnector(
        resolver=PinnedResolver("pinned.test", [ip_address("127.0.0.1")]), use_dns_cache=False, socket_factory=guard
    )
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await session.get(f"http://{host}:{origin.port}/")
    assert isinstance(caught.value.os_error, PeerRefusedError)
    assert guard.refused == ip_address("127.0.0.1")
    assert origin.hits == []


async def test_fetch_reports_a_peer_guard_refusal(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    origin = await serve(web.get("/", _answer(b"secret")))

    async def unvetted(url: Any, allow: Any, timeout: float) -> tuple[Any, ...]:
        return (ip_address("127.0.0.1"),)

    monkeypatch.setattr(fetch, "_resolve", unvetted)  # as if the up-front check were skipped
    error = await _refusal(f"http://pinned.test:{origin.port}/", allow_cidrs=())
    assert (error.code, error.message) == ("url_refused", "the address 127.0.0.1 of pinned.test is not allowed")
    assert origin.hits == []
