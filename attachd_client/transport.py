"""HTTP to one attachd: its base URL, the bearer token on every request, and every refusal raised as
the typed exception of attachd_client.errors."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson

from attachd_client.errors import ConnectionFailed, error_from_response

USER_AGENT = "attachd-client"


class Transport:
    def __init__(self, base_url: str, token: str | None, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.session = session

    def url(self, path_or_url: str) -> str:
        """A path on this attachd, or a full URL it answered with (a status URL, a tus upload's Location)."""
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return f"{self.base_url}{path_or_url}"

    def headers(self, more: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return {**headers, **(more or {})}

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Send a request and read its whole answer: (status, headers, body). A 4xx or 5xx is raised."""
        async with self.open(method, path, params=params, json=json, data=data, headers=headers) as response:
            try:
                body = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise ConnectionFailed("connection_failed", f"the answer broke off: {exc!r}") from exc
            return response.status, response.headers, body

    @contextlib.asynccontextmanager
    async def open(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A request whose answer is read as it arrives (a download); a 4xx or 5xx is raised first."""
        more = dict(headers or {})
        if json is not None:
            data = orjson.dumps(json)
            more["Content-Type"] = "application/json"
        try:
            async with self.session.request(
                method, self.url(path), params=params, data=data, headers=self.headers(more)
            ) as response:
                if response.status >= 400:
                    raise error_from_response(response.status, await response.read())
                yield response
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConnectionFailed("connection_failed", f"{method} {self.url(path)}: {exc!r}") from exc
