"""A service's life: serve until SIGTERM, then drain; while a dependency is away, say so and when to retry.

On SIGTERM (or SIGINT) a service first reports unready (/readyz 503, so a load balancer stops sending
it traffic), stops listening, lets the requests in flight finish within ATTACHD_SHUTDOWN_GRACE_S (an
upload still streaming keeps its connection until it is answered; aiohttp's own shutdown would stop
reading it), and only then closes its engines. Requests answered while draining close their connection.

A request that finds Postgres or Redis unreachable is answered 503 with Retry-After, in the error shape;
the engines reconnect by themselves (asyncpg's pool and redis-py open new connections on next use).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.core.errors import ApiError
from services.core.settings import Settings

log = logging.getLogger("attachd")

RETRY_AFTER_S = 2
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Drain:
    """Requests in flight, and whether the service is draining."""

    def __init__(self) -> None:
        self.draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self._in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """True when every request in flight was answered within ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


DRAIN = web.AppKey("drain", Drain)


@web.middleware
async def drain_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    drain = request.app[DRAIN]
    drain.enter()
    try:
        response = await handler(request)
        if drain.draining:
            response.force_close()
        return response
    finally:
        drain.leave()


# What a lost connection to Postgres or Redis raises, as the engines surface it.
UNAVAILABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.ConnectionDoesNotExistError,
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionRefusedError,  # connecting anew to a Postgres that is down (a client that leaves: not this)
)


@web.middleware
async def unavailable_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except UNAVAILABLE as exc:
        log.warning("%s %s: a dependency is unavailable: %r", request.method, request.path, exc)
        raise ApiError(
            "unavailable",
            "the service cannot reach its database or queue right now; retry shortly",
            status=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from None


async def until_signalled(stop: asyncio.Event | None = None) -> None:
    """Wait for SIGTERM or SIGINT (or ``stop`` set by someone else)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def drain_and_stop(runner: web.AppRunner, sites: list[web.BaseSite], grace_s: float) -> None:
    """Unready, stop listening, let requests in flight finish (up to ``grace_s``), then clean up."""
    drains = [app[DRAIN] for app in _apps(runner)]
    for drain in drains:
        drain.draining = True
    for site in sites:
        await site.stop()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    for drain in drains:
        if not await drain.wait_idle(max(deadline - loop.time(), 0)):
            log.warning("requests still in flight after the %.0f s grace are cut off", grace_s)
    await runner.cleanup()


def _apps(runner: web.AppRunner) -> list[web.Application]:
    return [runner.app] if DRAIN in runner.app else []


async def serve(app: web.Application, settings: Settings) -> None:
    """Serve ``app`` on the settings' host and port until SIGTERM or SIGINT, then drain (see the module's
    docstring)."""
    from services.web.server import app_runner

    runner = app_runner(app, settings, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    log.info("listening on %s:%s", settings.host, settings.port)
    try:
        await until_signalled()
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await drain_and_stop(runner, [site], settings.shutdown_grace_s)
