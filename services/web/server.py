"""The HTTP server every attachd service runs: aiohttp's, with the API's rules at the connection level.

aiohttp answers a request its HTTP parser refuses (a request line or header too long, too many headers,
``Content-Length`` with ``Transfer-Encoding``, bytes that are not HTTP) itself, before any middleware runs:
a ``text/plain`` 400 that quotes the start of the offending line (for ``Authorization``, the sender's own
token) and a logged traceback. :class:`Protocol` answers those in the API's error shape instead, quoting
nothing that was sent, logs one line and counts them in ``attachd_http_requests_total`` (route
``unparsed``). It also puts a deadline on request heads (``ATTACHD_HEADER_TIMEOUT_S``): a connection that
opens, or starts its next request, and does not finish the request line and headers in time is answered
408 and closed, so that clients trickling bytes cannot hold file descriptors for good. Idle keep-alive
connections close after ``ATTACHD_KEEPALIVE_TIMEOUT_S``.

:func:`app_runner` builds the runner every service serves with (``services.web.lifecycle.serve``,
``attachd dev``, tests).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
)
from aiohttp.web_protocol import RequestHandler

from services.core import logs
from services.core.settings import Settings
from services.web.http import (
    APP_NAME,
    REQUEST_ID_HEADER,
    REQUESTS,
    SERVER,
    http_error_response,
    json_response,
    new_request_id,
    request_id,
    request_key,
    stamp,
)

log = logging.getLogger("attachd.http")
access_log = logging.getLogger("attachd.access")

# The request line's limit and a header line's differ, so that a LineTooLong tells which of them it was.
MAX_REQUEST_LINE = 8190
MAX_HEADER_FIELD = 8192
MAX_HEADERS = 100
UNPARSED = "unparsed"  # the route label of requests refused before the app's middleware saw them


def refusal(exc: BaseException | None, *, max_field_size: int = MAX_HEADER_FIELD) -> tuple[int, str, str]:
    """The status, code and message for what the HTTP parser refused. The parser's own message (which
    quotes the request) is only ever read to tell cases apart, never sent or logged."""
    if isinstance(exc, LineTooLong):
        if exc.args[1:2] == (max_field_size,):
            return 431, "header_too_large", f"a request header is longer than {max_field_size} bytes"
        return 414, "uri_too_long", "the request line is longer than the limit of this server"
    if isinstance(exc, (BadHttpMethod, BadStatusLine)):
        return 400, "malformed_request", "the request line is not valid HTTP/1.1"
    if isinstance(exc, InvalidURLError):
        return 400, "malformed_request", "the request target is not a valid path"
    if isinstance(exc, InvalidHeader):
        return 400, "invalid_header", "a request header is malformed"
    text = exc.message if isinstance(exc, HttpProcessingError) and isinstance(exc.message, str) else ""
    head = text.split(":", 1)[0].lower()  # llhttp's reason comes first, before the quoted bytes
    if "too many headers" in head:
        return 431, "too_many_headers", f"a request has at most {MAX_HEADERS} headers"
    if "content-encoding" in head:
        return 415, "unsupported_encoding", "the body's Content-Encoding is not supported: send it as it is, or gzip"
    if "content-length" in head and "transfer-encoding" in head:
        return 400, "conflicting_framing", "send Content-Length or Transfer-Encoding, not both"
    if "transfer-encoding" in head or "chunk" in head:
        return 400, "invalid_framing", "the Transfer-Encoding or a chunk of the body is malformed"
    if "content-length" in head:
        return 400, "invalid_framing", "Content-Length is not a valid length"
    if "host" in head:
        return 400, "malformed_request", "the Host header is missing or malformed"
    if isinstance(exc, BadHttpMessage):
        return 400, "malformed_request", "the request is not valid HTTP/1.1"
    return 400, "bad_request", "the request could not be read"


def _why(exc: BaseException) -> str:
    return "the client left" if isinstance(exc, ConnectionError) else "its framing or encoding is invalid"


def _count(app_name: str, status: int) -> None:
    REQUESTS.labels(app_name, "-", UNPARSED, str(status)).inc()


_TIMEOUT_BODY = orjson.dumps(
    {"error": {"code": "request_timeout", "message": "the request line and headers arrived too slowly"}}
)


def _timeout_response(rid: str) -> bytes:
    return (
        b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nServer: %s\r\n%s: %s\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (SERVER.encode(), REQUEST_ID_HEADER.encode(), rid.encode(), len(_TIMEOUT_BODY), _TIMEOUT_BODY)
    )


# Requests whose access log line is at debug level: probes and scrapes would drown the rest.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_REFUSED = request_key("refused", bool)  # set on a request the parser refused: its method and path are placeholders


class AccessLogger(AbstractAccessLogger):
    """One line per answered request: method, path (never its query string: a signed link's signature is
    there), status, duration, bytes sent (the response head included), the request id and the account.
    No header is logged."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        refused = request.get(_REFUSED, False)
        method, path = ("-", "-") if refused else (request.method, request.path)
        level = logging.DEBUG if path in QUIET_PATHS and response.status < 400 else logging.INFO
        if not self.logger.isEnabledFor(level):
            return
        duration_ms = round(time * 1000, 2)
        sent = response.body_length
        self.logger.log(
            level,
            "%s %s %d %.1f ms %d bytes",
            method,
            path,
            response.status,
            duration_ms,
            sent,
            extra={
                "method": method,
                "path": path,
                "status": response.status,
                "duration_ms": duration_ms,
                "bytes": sent,
                "remote": request.remote,
                "request_id": request_id(request),
                "account": logs.get("account"),
            },
        )


class Protocol(RequestHandler):
    """aiohttp's connection handler, with the error shape for what the parser refuses and a head deadline.

    The deadline runs from when the connection opens and, later, from the first byte of each next request;
    it stops once the parser has the whole head (the body has its own deadlines in the handlers). A head
    still incomplete then is answered 408 and the connection closed; a connection that sent nothing is
    closed quietly.
    """

    __slots__ = ("_app_name", "_head_bytes", "_head_deadline", "_header_timeout")

    def __init__(self, manager: Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._app_name = manager.app_name
        self._header_timeout = manager.header_timeout
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_bytes = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        awaiting_head = self._waiter is not None or self._head_deadline is not None
        if data and awaiting_head and not self._messages:
            self._head_bytes = True
            if self._head_deadline is None:
                self._arm_head_deadline()
        super().data_received(data)
        if self._messages:  # a whole head arrived: the handler takes it from here
            self._disarm_head_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        if self._header_timeout > 0:
            self._head_deadline = self._loop.call_later(self._header_timeout, self._head_timed_out)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        self._head_bytes = False

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self._messages or self._request_in_progress or self.transport is None or self._force_close:
            return
        if self._head_bytes:
            rid = new_request_id()
            with logs.bound(request_id=rid):
                log.info("closed a connection from %s: its request head arrived too slowly", self._peer())
            _count(self._app_name, 408)
            self.transport.write(_timeout_response(rid))
        self.force_close()  # the transport sends what it holds, then closes

    def _peer(self) -> str:
        peer = self.peername
        return str(peer[0]) if isinstance(peer, tuple) and peer else "a client"

    def log_exception(self, *args: Any, **kw: Any) -> None:
        # aiohttp reads the rest of a body its handler left unread (lingering close); a body that does not
        # decode, or a client that leaves, ends that read: the connection closes, and it is no server error.
        exc = kw.get("exc_info")
        if isinstance(exc, (web.RequestPayloadError, ConnectionError)):
            log.info("stopped reading a request body from %s: %s", self._peer(), _why(exc))
            return
        super().log_exception(*args, **kw)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The response to a request the parser refused (and, as a last resort, to a handler's error
        that escaped the middleware): always the error shape, and the connection closes after it."""
        if request.writer.output_size > 0:  # as aiohttp's: a response has begun, only closing is left
            raise ConnectionError("a response was already sent; cannot send an error response")
        request_id(request)  # the parser's placeholder request has no headers: a new id, bound to these lines
        if status == 500:
            log.error("unhandled error on a request from %s", request.remote, exc_info=exc)
            body: dict[str, Any] = {"code": "internal_error", "message": "something went wrong on our side"}
        elif status == 504:
            body = {"code": "timeout", "message": "the request took too long"}
        else:
            status, code, text = refusal(exc, max_field_size=self.max_field_size)
            request[_REFUSED] = True
            log.info("refused a malformed request from %s: %s", request.remote, code)
            body = {"code": code, "message": text}
        _count(self._app_name, status)
        response = json_response({"error": body}, status=status)
        stamp(request, response)
        response.force_close()
        return response


class Server(web.Server):
    """aiohttp's low-level server, making :class:`Protocol` connections."""

    def __init__(self, handler: Any, *, app_name: str, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.app_name = app_name
        self.header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        return Protocol(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """An ``AppRunner`` whose server makes :class:`Protocol` connections, with attachd's limits and deadlines."""

    __slots__ = ("_settings",)

    def __init__(self, app: web.Application, settings: Settings, **kwargs: Any) -> None:
        kwargs.setdefault("shutdown_timeout", settings.shutdown_grace_s)
        kwargs.setdefault("keepalive_timeout", settings.keepalive_timeout_s)
        kwargs.setdefault("handler_cancellation", False)  # a dropped client must not cut a write in half
        kwargs.setdefault("access_log_class", AccessLogger)
        kwargs.setdefault("access_log", access_log)
        super().__init__(
            app, max_line_size=MAX_REQUEST_LINE, max_field_size=MAX_HEADER_FIELD, max_headers=MAX_HEADERS, **kwargs
        )
        self._settings = settings

    async def _make_server(self) -> web.Server:
        # aiohttp's own start-up (on_startup, cleanup_ctx, freezing), then the same server with our protocol.
        plain = await super()._make_server()
        return Server(
            _shaped(plain.request_handler, self.app.get(APP_NAME, "attachd")),
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            app_name=self.app.get(APP_NAME, "attachd"),
            header_timeout=self._settings.header_timeout_s,
            **plain._kwargs,
        )


def _shaped(handle: Any, app_name: str) -> Any:
    """The app's request handler, with the error shape for an HTTP error raised before its middleware runs
    (aiohttp's ``Expect`` check: its text quotes the header)."""

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        request_id(request)  # first, so that every line logged for the request carries it
        try:
            response: web.StreamResponse = await handle(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            REQUESTS.labels(app_name, request.method, UNPARSED, str(exc.status)).inc()
            response = http_error_response(exc)
        stamp(request, response)
        return response

    return handler


def app_runner(app: web.Application, settings: Settings, **kwargs: Any) -> Runner:
    """The runner of ``app``; ``setup()`` it, then add sites (``web.TCPSite(runner, host, port)``)."""
    return Runner(app, settings, **kwargs)
