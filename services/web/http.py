"""What every attachd HTTP app shares: app keys, JSON in and out, the error shape, auth, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import asyncpg
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from yarl import URL

from services.core import apikeys, logs
from services.core.auth import Principal, TokenVerifier, unauthorized
from services.core.errors import ApiError
from services.core.repository import apikeys as key_store
from services.core.settings import Settings
from services.web.credentials import bearer
from services.web.lifecycle import DRAIN, RETRY_AFTER_S, Drain, drain_middleware, unavailable_middleware

log = logging.getLogger("attachd.http")

SETTINGS = web.AppKey("settings", Settings)
VERIFIER = web.AppKey("verifier", TokenVerifier)
# Every app has one (services.web.engines opens it): reads, and the API-key lookups.
POOL = web.AppKey("pool", asyncpg.Pool)
READY = web.AppKey("ready_checks", list)
APP_NAME = web.AppKey("app_name", str)
# Coroutines run before each /metrics answer, to bring gauges read from elsewhere (Redis, Postgres) up to date.
METRICS_REFRESH = web.AppKey("metrics_refresh", list)

# What every response says in Server: the product, no versions.
SERVER = "attachd"
REQUEST_ID_HEADER = "X-Request-ID"
# A key lookup is one index probe; this long means Postgres is away or stuck.
KEY_LOOKUP_TIMEOUT_S = 5.0


# web.RequestKey since aiohttp 3.13 (a plain string key warns there); a string before it.
def request_key(name: str, kind: type) -> Any:
    make = getattr(web, "RequestKey", None)
    return make(name, kind) if make is not None else f"attachd_{name}"


_REQUEST_ID_KEY = request_key("request_id", str)
_WELL_FORMED_REQUEST_ID = re.compile(r"[A-Za-z0-9._\-]{1,128}")

REQUESTS = Counter("attachd_http_requests_total", "HTTP requests", ["app", "method", "route", "status"])
LATENCY = Histogram(
    "attachd_http_request_seconds",
    "HTTP request latency",
    ["app", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def new_request_id() -> str:
    return secrets.token_hex(16)


def request_id(request: web.BaseRequest) -> str:
    """The request's id: its ``X-Request-ID`` when well-formed (1-128 of ``A-Za-z0-9._-``), else a new one.
    Decided once per request, and bound to its log lines (services.core.logs)."""
    known: str | None = request.get(_REQUEST_ID_KEY)
    if known is not None:
        return known
    sent = request.headers.get(REQUEST_ID_HEADER)
    rid = sent if sent is not None and _WELL_FORMED_REQUEST_ID.fullmatch(sent) else new_request_id()
    request[_REQUEST_ID_KEY] = rid
    logs.bind(request_id=rid)
    return rid


def stamp(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """The headers every response carries: its request's id, and a Server header without versions."""
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = request_id(request)
        response.headers["Server"] = SERVER


async def _stamp_on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    stamp(request, response)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # A date-time goes out as records._plain writes it: ISO 8601, UTC as "Z".
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_UTC_Z),
        status=status,
        headers=headers,
        content_type="application/json",
    )


def error_response(error: ApiError) -> web.Response:
    return json_response(error.body(), status=error.status, headers=error.headers)


# What nginx logs for a request whose client closed the connection before the response: not a server error.
CLIENT_CLOSED = 499

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    417: "expectation_failed",
}


def http_error_response(exc: web.HTTPException) -> web.Response:
    """An aiohttp HTTP error (404, 405, 413, 417...) in the error shape; its text, which may quote the
    request, is not sent."""
    code = _HTTP_CODES.get(exc.status, "http_error")
    message = exc.reason if exc.status != 404 else "no such route"
    if exc.status == 413:
        message = "the request body is too large"
    return json_response(
        {"error": {"code": code, "message": message}},
        status=exc.status,
        headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
    )


# Request bodies aiohttp decodes (br and zstd need modules attachd does not install); any other coding
# would reach the handlers still encoded.
CONTENT_CODINGS = frozenset({"gzip", "deflate", "identity"})


def check_content_encoding(request: web.BaseRequest) -> None:
    coding = request.headers.get("Content-Encoding")
    if coding is not None and coding.strip().lower() not in CONTENT_CODINGS:
        raise ApiError(
            "unsupported_encoding",
            "the body's Content-Encoding is not supported: send it as it is, or gzip- or deflate-encoded",
            field="Content-Encoding",
            status=415,
        )


# The attribute of a handler that names the query parameters it reads as lists (see list_params).
_LIST_PARAMS = "attachd_list_params"


def list_params(*names: str) -> Callable[[Any], Any]:
    """A handler that reads these query parameters as lists (``order_by=a&order_by=b``): check_url lets
    them repeat. Every other parameter given twice is refused."""

    def mark(handler: Any) -> Any:
        setattr(handler, _LIST_PARAMS, frozenset(names))
        return handler

    return mark


def check_url(request: web.BaseRequest) -> None:
    """The path and query string decode to UTF-8 (aiohttp would put U+FFFD in place of what does not: a
    value that is not the one sent), and no query parameter is given twice unless the route reads it as a
    list (list_params)."""
    url = request.rel_url
    for raw, what in ((url.raw_path, "path"), (url.raw_query_string, "query string")):
        if "%" in raw:
            try:
                unquote(raw, errors="strict")
            except UnicodeDecodeError:
                raise ApiError("invalid_url", f"the {what} is not UTF-8 once percent-decoded") from None
    query = request.query
    if len(query) > 1 and len(set(query)) < len(query):
        match_info = getattr(request, "match_info", None)
        lists: frozenset[str] = getattr(getattr(match_info, "handler", None), _LIST_PARAMS, frozenset())
        seen: set[str] = set()
        for key in query:
            if key in seen and key not in lists:
                raise ApiError("duplicate_parameter", f"{key} is given more than once", field=key)
            seen.add(key)


def client_gone(request: web.BaseRequest) -> bool:
    """Whether the client's connection is closed (or closing): nothing sent to it arrives any more."""
    transport = request.transport
    return transport is None or transport.is_closing()


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    started = time.perf_counter()
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    request_id(request)
    status = 500
    try:
        check_url(request)
        check_content_encoding(request)
        response = await handler(request)
        status = response.status
        return response
    except ApiError as exc:
        status = exc.status
        return error_response(exc)
    except web.HTTPException as exc:
        status = exc.status
        if exc.status < 400:
            raise
        return http_error_response(exc)
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    except (ConnectionError, web.RequestPayloadError) as exc:
        if client_gone(request):  # the client dropped the connection, mid-upload most likely: not our error
            status = CLIENT_CLOSED
            log.info("client closed the connection during %s %s", request.method, request.path)
            return web.Response(status=CLIENT_CLOSED)  # nobody reads it; aiohttp drops it quietly
        if isinstance(exc, web.RequestPayloadError):  # a body whose chunks or Content-Encoding do not decode
            status = 400
            response = json_response(
                {"error": {"code": "invalid_body", "message": "the request body's framing or encoding is invalid"}},
                status=400,
            )
            response.force_close()  # the rest of the body cannot be told from the next request
            return response
        return _internal_error(request)
    except Exception:
        return _internal_error(request)
    finally:
        app = request.app.get(APP_NAME, "attachd")
        REQUESTS.labels(app, request.method, route, str(status)).inc()
        LATENCY.labels(app, route).observe(time.perf_counter() - started)


def _internal_error(request: web.Request) -> web.Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return json_response(
        {"error": {"code": "internal_error", "message": "something went wrong on our side"}}, status=500
    )


async def principal(request: web.Request, scope: str) -> Principal:
    """The caller of a native ``/v1`` route: ``Authorization: Bearer`` with a JWT or an API key."""
    if not request.headers.get("Authorization"):
        raise ApiError(
            "unauthorized",
            "an Authorization: Bearer token (a JWT or an API key) is required",
            status=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    credential = bearer(request.headers)
    if credential is None:
        raise unauthorized("the Authorization header must be 'Bearer <token>'")
    return await authenticate(request, credential, scope)


async def authenticate(
    request: web.Request, credential: str | None, scope: str, *, profile: str | None = None
) -> Principal:
    """The principal of a credential however the caller's API sends it (a compat profile takes it from its
    own header, see services.web.credentials): a JWT, or an API key, which may be limited to ``profile``
    (None: native ``/v1``). 401 for a credential that lets nobody in, 403 for one without ``scope``."""
    if not credential:
        raise ApiError("unauthorized", "credentials are required", status=401, headers={"WWW-Authenticate": "Bearer"})
    if apikeys.is_key(credential):
        who = await _key_principal(request, credential, profile)
    else:
        who = request.app[VERIFIER].verify(credential)
    logs.bind(account=who.account_id)
    who.require(scope)
    return who


async def _key_principal(request: web.Request, key: str, profile: str | None) -> Principal:
    """An API key is read from Postgres on every request, by its hash (a unique index): nothing cached, so
    nothing can outlive a revoke on any replica. Postgres away or too slow: 503, retry shortly (JWTs
    still work)."""
    if not apikeys.well_formed(key):
        raise unauthorized("the API key is malformed")
    try:
        async with asyncio.timeout(KEY_LOOKUP_TIMEOUT_S):
            found = await key_store.key_by_hash(request.app[POOL], apikeys.key_hash(key))
    except (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError) as exc:
        log.warning("cannot check an API key: %r", exc)
        raise ApiError(
            "unavailable",
            "API keys cannot be checked right now; retry shortly",
            status=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from None
    if found is None:
        raise unauthorized("the API key is not known")
    stored, now = found
    return apikeys.principal_of(stored, now=now, profile=profile)


async def read_json(
    request: web.Request, *, max_bytes: int, media_types: tuple[str, ...] = ("application/json",)
) -> Any:
    if request.content_type not in media_types:
        raise ApiError("unsupported_media_type", "send application/json (or multipart/form-data for files)", status=415)
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError("payload_too_large", f"the JSON body is larger than {max_bytes} bytes", status=413)
    try:
        async with asyncio.timeout(request.app[SETTINGS].body_read_timeout_s):
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError("payload_too_large", f"the JSON body is larger than {max_bytes} bytes", status=413) from None
    except TimeoutError:
        raise ApiError("request_timeout", "the request body arrived too slowly", status=408) from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError("invalid_json", f"the body is not valid JSON: {exc}", status=400) from None


def base_url(request: web.Request) -> str:
    """Where the signed links in a response point: ATTACHD_PUBLIC_URL, else the request's own origin."""
    configured = request.app[SETTINGS].public_url
    return configured.rstrip("/") if configured else f"{request.scheme}://{request.host}"


def own_url(request: web.Request) -> str:
    """Where links back to the part that answers point (a profile's next page)."""
    return reached_by(request.app[SETTINGS].public_url, request.scheme, request.host)


def reached_by(public_url: str, scheme: str, host: str) -> str:
    """The base URL a client reached a request by: ATTACHD_PUBLIC_URL when the request came by its host (behind
    the gateway, whose TLS the app never sees), else the request's own scheme and host (a part published on a
    port of its own, as compose.yaml publishes them, while ATTACHD_PUBLIC_URL names the query service's)."""
    if public_url:
        public = URL(public_url)
        with contextlib.suppress(ValueError):  # a Host header that is no host: the request's own, as given
            reached = URL(f"{public.scheme}://{host}")
            if (reached.host, reached.port) == (public.host, public.port):
                return public_url.rstrip("/")
    return f"{scheme}://{host}"


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if request.app[DRAIN].draining:
        return json_response({"status": "draining"}, status=503)
    failures = {}
    for name, check in request.app[READY]:
        try:
            await asyncio.wait_for(check(), 2)
        except Exception as exc:  # any failing dependency makes us unready, whatever it raised
            failures[name] = str(exc) or type(exc).__name__
    if failures:
        return json_response({"status": "unavailable", "failing": failures}, status=503)
    return json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    for refresh in request.app[METRICS_REFRESH]:
        try:
            await asyncio.wait_for(refresh(), 2)
        except Exception:  # the gauge keeps its last value; the scrape must not fail for it
            log.warning("could not refresh a metric (%s)", getattr(refresh, "__name__", refresh), exc_info=True)
    body = await asyncio.to_thread(generate_latest)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def base_app(name: str, settings: Settings, *, client_max_size: int | None = None) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, drain_middleware, unavailable_middleware],
        client_max_size=client_max_size or settings.max_json_bytes,
    )
    app[APP_NAME] = name
    app[DRAIN] = Drain()
    app[SETTINGS] = settings
    app[VERIFIER] = TokenVerifier(settings.jwt_secret, settings.jwt_public_key)
    app[READY] = []
    app[METRICS_REFRESH] = []
    app.on_response_prepare.append(_stamp_on_prepare)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


def add_ready_check(app: web.Application, name: str, check: Callable[[], Awaitable[Any]]) -> None:
    app[READY].append((name, check))
