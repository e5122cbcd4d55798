"""When a failed request is worth sending again, and how long to wait first."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from attachd_client import errors

T = TypeVar("T")


def backoff_s(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): 0.5, 1, 2, 4, then 8 at most."""
    return min(8.0, 0.5 * 2 ** (attempt - 1))


def resumable(error: errors.AttachdError) -> bool:
    """Whether a tus chunk is worth sending again from the offset attachd then reports: after a broken
    connection, a server error, a chunk that arrived damaged (460) or too slowly (408), an offset that
    moved (409), an upload another request still holds (423)."""
    if isinstance(error, errors.ConnectionFailed | errors.ServerError | errors.ChecksumMismatch | errors.Locked):
        return True
    if isinstance(error, errors.Conflict):
        return error.code == "offset_mismatch"
    return error.status in (408, 429) or error.code == "client_closed"


def repeatable(error: errors.AttachdError) -> bool:
    """Whether a create sent with an Idempotency-Key is worth sending again with the same key: its answer
    was lost or attachd failed (it answers a retry with the first request's outcome if that one got
    through), or the first request is still being received (409 ``idempotency_key_in_use``)."""
    if isinstance(error, errors.ConnectionFailed | errors.ServerError):
        return True
    return isinstance(error, errors.Conflict) and error.code == "idempotency_key_in_use"


async def retrying(send: Callable[[], Awaitable[T]], worth: Callable[[errors.AttachdError], bool], retries: int) -> T:
    """``await send()``, again after each failure ``worth`` retrying, ``retries`` times at most."""
    attempt = 0
    while True:
        try:
            return await send()
        except errors.AttachdError as exc:
            attempt += 1
            if not worth(exc) or attempt > retries:
                raise
            await asyncio.sleep(backoff_s(attempt))
