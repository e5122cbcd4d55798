"""What the profiles share: their own error bodies, looking records up by integer id, waiting for jobs."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from aiohttp import web

from services.core.errors import ApiError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def profile_errors(render: Callable[[ApiError], web.Response]) -> Callable[[Handler], Handler]:
    """A handler whose ApiErrors are answered in its profile's error body (status and headers kept)."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except ApiError as exc:
                response = render(exc)
                for name, value in exc.headers.items():
                    response.headers.setdefault(name, value)
                return response

        return wrapped

    return wrap
