"""What the profiles share: their own error bodies, and waiting for the jobs they queue."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from aiohttp import web

from services.core.contract import AnyOutcome, Failed
from services.core.errors import ApiError
from services.ingress.writes import outcome_of

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


class JobFailed(ApiError):
    """A write whose job failed: its error, with the per-item errors of a create that refused files."""

    def __init__(self, outcome: Failed) -> None:
        info = outcome.error
        super().__init__(info.code, info.message, field=info.field, status=info.status, extra=dict(info.extra))
        self.errors = outcome.errors


# How soon a client asked to come back for a write still being processed should do so.
RETRY_AFTER_S = 5


async def finished(request: web.Request, job_id: str) -> AnyOutcome:
    """The outcome of a write a profile queued, for APIs that have no "accepted, still working" answer:
    a failure is raised as ``JobFailed``; a job not done within ATTACHD_SYNC_WAIT_S is a 503 to retry
    (it completes all the same; a retry with the same Idempotency-Key gets its answer)."""
    outcome = await outcome_of(request, job_id)
    if outcome is None:
        raise ApiError(
            "still_processing",
            "the request is still being processed; retry it shortly",
            status=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    if isinstance(outcome, Failed):
        raise JobFailed(outcome)
    return outcome
