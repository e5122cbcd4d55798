"""Events: the outbox relay to the ``attachd:events`` Redis Stream, and closing upload sessions.

Every committed change wrote its event to the ``outbox`` table in its own
transaction. The relay copies unpublished rows to the stream in ``seq`` order,
then marks them published: XADD first, mark after, so a crash in between
publishes some events twice and never loses one. ``workers/EVENTS.md`` is the
consumer's side of it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import orjson
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from services.core import repository
from services.core.contract import AnyOutcome, CloseSessionJob, Failed, SessionClosed, attachment_row, session_row
from services.core.errors import not_found
from services.core.records import row_to_dict
from services.core.settings import Settings
from workers.context import WorkerContext
from workers.runner import Attempt, JobSpec

log = logging.getLogger("attachd.events")

STREAM = "attachd:events"
# The last seq the stream holds, written after each batch: if Redis loses the stream's tail (a crash without
# AOF, a flush), this goes back with it, and the relay sends the lost events again.
RELAYED = "attachd:events:relayed"
REPLAY_WINDOW_S = 24 * 3600  # how far back a lost stream is refilled
BATCH = 500
EVENTS_RELAYED_AGAIN = Counter("attachd_events_relayed_again", "Events relayed again after Redis lost them")


def stream_entry(row: asyncpg.Record) -> dict[FieldT, EncodableT]:
    r = row_to_dict(row)
    event = {
        "seq": r["seq"],
        "type": r["event_type"],
        "account_id": r["account_id"],
        "attachment_id": r["attachment_id"],
        "occurred_at": r["created_at"],
        **r["payload"],
    }
    return {"seq": str(r["seq"]), "account_id": r["account_id"], "type": r["event_type"], "event": orjson.dumps(event)}


async def relay_outbox(pool: asyncpg.Pool, redis: Redis, *, batch: int = BATCH, maxlen: int = 1_000_000) -> int:
    """Publish up to ``batch`` unpublished events in ``seq`` order; how many were published.

    One relay at a time, across every worker: another one running makes this one return 0.
    """
    async with pool.acquire() as conn, conn.transaction():
        if not await repository.try_lock_relay(conn):
            return 0
        await _refill_lost(conn, redis)
        rows = await repository.unpublished_events(conn, batch)
        if not rows:
            return 0
        async with redis.pipeline(transaction=False) as pipe:
            for row in rows:
                pipe.xadd(STREAM, stream_entry(row), maxlen=maxlen, approximate=True)
            # Last: Redis applies (and its AOF keeps) a prefix of these, so the mark never runs ahead.
            pipe.set(RELAYED, rows[-1]["seq"])
            await pipe.execute()
        await repository.mark_published(conn, [row["seq"] for row in rows])
    return len(rows)


async def _refill_lost(conn: asyncpg.Connection, redis: Redis) -> None:
    """Events marked published that the stream no longer has (Redis lost data) are published again."""
    published = await repository.last_published_seq(conn)
    relayed = await redis.get(RELAYED)
    if published is None or (relayed is not None and int(relayed) >= published):
        return
    since = 0 if relayed is None else int(relayed)
    again = await repository.unpublish_after(conn, since, REPLAY_WINDOW_S)
    log.warning("the events stream lost events after seq %d (Redis lost data); relaying %d again", since, again)
    EVENTS_RELAYED_AGAIN.inc(again)


async def relay_forever(pool: asyncpg.Pool, redis, settings: Settings) -> None:
    """The worker's relay loop: drain the outbox, wait ``relay_interval_s``, again; cancel to stop."""
    delay = settings.relay_interval_s
    while True:
        try:
            while await relay_outbox(pool, redis, maxlen=settings.events_maxlen) == BATCH:
                pass
            delay = settings.relay_interval_s
        except Exception:
            log.warning("event relay failed; retrying", exc_info=True)
            delay = min(max(delay * 2, 1.0), 30.0)
        await asyncio.sleep(delay)


async def close_session(wctx: WorkerContext, job: CloseSessionJob, attempt: Attempt) -> AnyOutcome:
    """Close an upload session and announce its attachments in one event; closing it again adds none."""
    async with wctx.pool.acquire() as conn, conn.transaction():
        closed = None
        # A re-run of this job must not close the session again if an upload has reopened it since.
        if not await repository.job_wrote_event(conn, job.job_id, repository.SESSION_CLOSED):
            closed = await repository.close_upload_session(conn, job.account_id, job.session_token, job.job_id)
        if closed is None and (session := await repository.get_upload_session(conn, job.account_id, job.session_token)):
            closed = session, await repository.session_attachments(conn, job.account_id, job.session_token)
    if closed is None:
        return Failed(error=not_found("session").to_info())
    session, rows = closed
    return SessionClosed(session=session_row(session), attachments=[attachment_row(r) for r in rows])


async def close_idle_sessions(pool: asyncpg.Pool, idle_s: float, *, limit: int = 500) -> int:
    """Close the sessions with no upload for ``idle_s`` seconds, each with its event; how many."""
    idle = await repository.idle_sessions(pool, idle_s, limit)
    closed = 0
    for session in idle:
        async with pool.acquire() as conn, conn.transaction():
            # Re-checked inside: an upload since the query keeps the session open.
            if await repository.close_upload_session(
                conn, session["account_id"], session["session_token"], None, idle_s=idle_s
            ):
                closed += 1
    if closed:
        log.info("closed %d idle upload sessions", closed)
    return closed


async def close_idle(ctx: dict[str, Any]) -> int:
    """arq cron: ``close_idle_sessions`` with ``ATTACHD_SESSION_IDLE_S``."""
    wctx: WorkerContext = ctx["attachd"]
    return await close_idle_sessions(wctx.pool, wctx.settings.session_idle_s)


CLOSE_SESSION = JobSpec(CloseSessionJob, close_session, deadline_s=lambda s: 60)
