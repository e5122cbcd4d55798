"""Download a ``url`` source into a file, without becoming an SSRF proxy.

Every hop (the URL, then each redirect target) is checked by
:func:`services.core.urlpolicy.check_url`, its host is resolved here and the
whole answer vetted, and aiohttp is handed exactly those addresses through a
one-host resolver, so DNS cannot change between the check and the connect.
A ``socket_factory`` re-checks the address of every socket aiohttp opens, so a
path that skipped the resolver (aiohttp does not resolve IP literals) or a
future change in aiohttp cannot reach a refused address either.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from services.core.errors import ApiError
from services.core.urlpolicy import IPAddress, IPNetwork, check_url, is_address_allowed, literal_ip

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_READ_CHUNK = 64 * 1024
_WRITE_BATCH = 256 * 1024


@dataclass(frozen=True)
class FetchResult:
    final_url: str
    size: int
    content_type: str | None
    filename: str | None


async def fetch_to_file(
    url: str,
    fileobj: BinaryIO,
    *,
    max_bytes: int,
    allow_cidrs: Sequence[IPNetwork] = (),
    connect_timeout: float = 5.0,
    total_timeout: float = 60.0,
    max_redirects: int = 5,
    user_agent: str = "attachd/0.1",
) -> FetchResult:
    """Stream ``url`` into ``fileobj``, following at most ``max_redirects`` redirects.

    Every refusal is an :class:`ApiError` with ``field="url"``.
    """
    current = check_url(url)
    headers = {"User-Agent": user_agent, "Accept-Encoding": "identity"}
    try:
        async with asyncio.timeout(total_timeout):
            for _ in range(max_redirects + 1):
                outcome = await _hop(current, fileobj, headers, max_bytes, allow_cidrs, connect_timeout)
                if isinstance(outcome, FetchResult):
                    return outcome
                current = check_url(outcome)
            raise ApiError(
                "too_many_redirects", f"url redirected more than {max_redirects} times", field="url", status=400
            )
    except TimeoutError:
        raise _timeout(f"fetching url took longer than {total_timeout:g} s") from None


async def _hop(
    url: URL,
    fileobj: BinaryIO,
    headers: dict[str, str],
    max_bytes: int,
    allow: Sequence[IPNetwork],
    connect_timeout: float,
) -> FetchResult | URL:
    """One request: the result, or the (unchecked) URL it redirects to."""
    assert url.host is not None and url.raw_host is not None
    addresses = await _resolve(url, allow, connect_timeout)
    guard = PeerGuard(allow)
    connector = aiohttp.TCPConnector(
        resolver=PinnedResolver(url.raw_host, addresses), use_dns_cache=False, socket_factory=guard
    )
    session = aiohttp.ClientSession(
        connector=connector,
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout),
        trust_env=False,  # an environment proxy would do the resolving and connecting for us
        auto_decompress=False,
    )
    try:
        async with session, session.get(_request_url(url), allow_redirects=False) as resp:
            if resp.status in _REDIRECT_STATUSES and (location := resp.headers.get("Location")):
                try:
                    return url.join(URL(location))
                except ValueError:
                    raise ApiError("invalid_url", "url redirected to an invalid URL", field="url") from None
            if not 200 <= resp.status < 300:
                raise _failure(f"fetching url answered HTTP {resp.status}")
            encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                # Refused rather than stored: the bytes would not be the file, and
                # decoding would make max_bytes count the wrong thing.
                raise _failure(f"fetching url answered with a {encoding}-encoded body")
            if resp.content_length is not None and resp.content_length > max_bytes:
                raise _too_large(max_bytes)
            size = await _stream(resp, fileobj, max_bytes)
            return FetchResult(
                final_url=str(url),
                size=size,
                content_type=_content_type(resp),
                filename=_filename(resp, url),
            )
    except aiohttp.ServerTimeoutError:
        raise _timeout(f"connecting to {url.host} timed out") from None
    except aiohttp.ClientConnectorError as exc:
        if guard.refused is not None:
            raise _refused(guard.refused, url.host) from None
        raise _failure(f"fetching url failed: {_reason(exc)}") from None
    except aiohttp.InvalidURL:
        raise ApiError("invalid_url", "url is not a valid URL", field="url") from None
    except aiohttp.ClientError as exc:
        raise _failure(f"fetching url failed: {_reason(exc)}") from None


def _request_url(url: URL) -> URL:
    # aiohttp refuses legacy IPv4 forms (127.1, 0x7f.1, ...), so send the
    # literal we vetted in its canonical spelling (yarl already normalises IPv6).
    ip = literal_ip(url.host or "")
    return url.with_host(str(ip)) if ip is not None and ip.version == 4 else url


async def _resolve(url: URL, allow: Sequence[IPNetwork], timeout: float) -> tuple[IPAddress, ...]:
    """Every address of the host, or a refusal if any one of them is not allowed."""
    host = url.host
    assert host is not None and url.raw_host is not None
    if (ip := literal_ip(host)) is not None:
        addresses: tuple[IPAddress, ...] = (ip,)
    else:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(url.raw_host, url.port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise _timeout(f"resolving {host} timed out") from None
        except OSError:
            raise _failure(f"fetching url failed: cannot resolve {host}") from None
        addresses = tuple(
            dict.fromkeys(
                ipaddress.ip_address(sockaddr[0])
                for family, _, _, _, sockaddr in infos
                if family in (socket.AF_INET, socket.AF_INET6)
            )
        )
        if not addresses:
            raise _failure(f"fetching url failed: cannot resolve {host}")
    for address in addresses:
        if not is_address_allowed(address, allow):
            raise _refused(address, host)
    return addresses


class PinnedResolver(AbstractResolver):
    """Answers for one host only, with addresses vetted before the request."""

    def __init__(self, host: str, addresses: Sequence[IPAddress]) -> None:
        self._host = _host_key(host)
        self._addresses = tuple(addresses)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if _host_key(host) != self._host:
            raise OSError(f"{host} was not vetted for this request")
        results = []
        for ip in self._addresses:
            ip_family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
            if family in (socket.AF_UNSPEC, ip_family):
                results.append(
                    ResolveResult(
                        hostname=host,
                        host=str(ip),
                        port=port,
                        family=ip_family,
                        proto=0,
                        flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                    )
                )
        return results

    async def close(self) -> None:
        pass


class PeerRefusedError(OSError):
    """An OSError, so aiohttp treats it like any failed connect and tries the next address."""


class PeerGuard:
    """``TCPConnector(socket_factory=...)``: refuses to open a socket towards a refused address.

    This runs before ``connect()``, whichever way aiohttp arrived at the address.
    """

    def __init__(self, allow: Sequence[IPNetwork]) -> None:
        self._allow = allow
        self.refused: IPAddress | None = None

    def __call__(self, addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        ip = ipaddress.ip_address(sockaddr[0])
        if not is_address_allowed(ip, self._allow):
            self.refused = ip
            raise PeerRefusedError(f"connecting to {ip} is not allowed")
        return socket.socket(family, type_, proto)


async def _stream(resp: aiohttp.ClientResponse, fileobj: BinaryIO, max_bytes: int) -> int:
    loop = asyncio.get_running_loop()
    size = 0
    batch = bytearray()
    async for chunk in resp.content.iter_chunked(_READ_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        batch += chunk
        if len(batch) >= _WRITE_BATCH:
            data, batch = batch, bytearray()
            await loop.run_in_executor(None, fileobj.write, data)
    if batch:
        await loop.run_in_executor(None, fileobj.write, batch)
    return size


def _content_type(resp: aiohttp.ClientResponse) -> str | None:
    declared = resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    return declared or None


def _filename(resp: aiohttp.ClientResponse, url: URL) -> str | None:
    disposition = resp.content_disposition
    if disposition is not None and disposition.filename:
        return disposition.filename
    return url.name or None


def _reason(exc: aiohttp.ClientError) -> str:
    match exc:
        case aiohttp.ClientConnectorCertificateError():
            return "the TLS certificate is not valid for the host"
        case aiohttp.ClientSSLError():
            return "the TLS handshake failed"
        case aiohttp.ClientConnectorError(os_error=OSError(errno=int(errno))):
            return os.strerror(errno).lower()
        case aiohttp.ClientConnectorError():
            return "cannot connect"
        case aiohttp.ServerDisconnectedError():
            return "the server closed the connection"
        case aiohttp.ClientPayloadError():
            return "the response body was cut short or malformed"
        case aiohttp.ClientResponseError():
            return "the server sent an invalid HTTP response"
        case _:
            return "connection error"


def _host_key(host: str) -> str:
    return host.rstrip(".").lower()


def _refused(ip: IPAddress, host: str | None) -> ApiError:
    return ApiError("url_refused", f"the address {ip} of {host} is not allowed", field="url", status=400)


def _too_large(max_bytes: int) -> ApiError:
    message = f"the file at url is larger than {max_bytes} bytes"
    return ApiError("size_exceeded", message, field="url", status=413)


def _timeout(message: str) -> ApiError:
    return ApiError("fetch_timeout", message, field="url", status=422)


def _failure(message: str) -> ApiError:
    return ApiError("fetch_failed", message, field="url", status=422)
