"""SQL for the outbox (written with every change, read by the relay) and for upload sessions."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from services.core.records import COLUMNS, row_to_dict

SESSION_CLOSED = "upload_session.closed"
SESSION_COLUMNS = "session_token, opened_at, last_upload_at, closed_at"
_EVENT_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtextextended('attachd-events:' || $1, 0))"
_RELAY_LOCK_SQL = "SELECT pg_try_advisory_xact_lock(hashtextextended('attachd-relay', 0))"


async def write_event(
    conn: asyncpg.Connection,
    account_id: str,
    event_type: str,
    attachment_id: uuid.UUID | str | None,
    job_id: str | None,
    payload: Mapping[str, Any],
) -> None:
    """Add an event to the outbox. Write events last in a transaction: the first takes the account's
    event lock, held until commit, so one account's events commit in ``seq`` order (the relay
    publishes them in that order); a transaction holding it must not wait for any other lock."""
    await conn.execute(_EVENT_LOCK_SQL, account_id)
    await conn.execute(
        "INSERT INTO outbox (account_id, event_type, attachment_id, job_id, payload) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        account_id,
        event_type,
        attachment_id,
        job_id,
        {"type": event_type, **payload},
    )


async def job_already_applied(conn: asyncpg.Connection, job_id: str, attachment_id: uuid.UUID) -> bool:
    """True when this job's change is committed: a re-run must report success, not "not found"."""
    applied: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM outbox WHERE job_id = $1 AND attachment_id = $2)", job_id, attachment_id
    )
    return applied


async def job_wrote_event(conn: asyncpg.Connection, job_id: str, event_type: str) -> bool:
    wrote: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM outbox WHERE job_id = $1 AND event_type = $2)", job_id, event_type
    )
    return wrote


# -- the relay ------------------------------------------------------------------------------------


async def try_lock_relay(conn: asyncpg.Connection) -> bool:
    """Take the relay's lock until the transaction ends; False when another relay holds it."""
    locked: bool = await conn.fetchval(_RELAY_LOCK_SQL)
    return locked


async def unpublished_events(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT seq, account_id, event_type, attachment_id, payload, created_at FROM outbox "
        "WHERE published_at IS NULL ORDER BY seq LIMIT $1",
        limit,
    )
    return rows


async def mark_published(conn: asyncpg.Connection, seqs: Sequence[int]) -> None:
    await conn.execute("UPDATE outbox SET published_at = now() WHERE seq = ANY($1::bigint[])", list(seqs))


async def last_published_seq(conn: asyncpg.Connection) -> int | None:
    seq: int | None = await conn.fetchval("SELECT max(seq) FROM outbox WHERE published_at IS NOT NULL")
    return seq


async def unpublish_after(conn: asyncpg.Connection, seq: int, within_s: float) -> int:
    """Mark the events after ``seq`` published in the last ``within_s`` seconds unpublished again (the
    stream lost them); how many."""
    status: str = await conn.execute(
        "UPDATE outbox SET published_at = NULL WHERE seq > $1 AND published_at > now() - make_interval(secs => $2)",
        seq,
        within_s,
    )
    return int(status.rpartition(" ")[2])


# -- upload sessions ------------------------------------------------------------------------------


async def touch_upload_session(conn: asyncpg.Connection, account_id: str, token: str) -> None:
    """Open the session, or keep it open: an upload to a closed session reopens it."""
    await conn.execute(
        "INSERT INTO upload_sessions (account_id, session_token) VALUES ($1, $2) "
        "ON CONFLICT (account_id, session_token) DO UPDATE SET last_upload_at = now(), closed_at = NULL",
        account_id,
        token,
    )


async def get_upload_session(conn: asyncpg.Connection, account_id: str, token: str) -> asyncpg.Record | None:
    session: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {SESSION_COLUMNS} FROM upload_sessions WHERE account_id = $1 AND session_token = $2", account_id, token
    )
    return session


async def session_attachments(conn: asyncpg.Connection, account_id: str, token: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {COLUMNS} FROM attachments WHERE account_id = $1 AND session_token = $2 "
        f"AND canceled_at IS NULL ORDER BY seq",
        account_id,
        token,
    )
    return rows


async def close_upload_session(
    conn: asyncpg.Connection, account_id: str, token: str, job_id: str | None, *, idle_s: float | None = None
) -> tuple[asyncpg.Record, list[asyncpg.Record]] | None:
    """Close an open session (with ``idle_s``, only one idle that long) and announce its live attachments
    in one event. None when it was not open: a closed session is never announced twice."""
    session = await conn.fetchrow(
        f"UPDATE upload_sessions SET closed_at = now() WHERE account_id = $1 AND session_token = $2 "
        f"AND closed_at IS NULL AND ($3::float8 IS NULL OR last_upload_at < now() - make_interval(secs => $3)) "
        f"RETURNING {SESSION_COLUMNS}",
        account_id,
        token,
        idle_s,
    )
    if session is None:
        return None
    rows = await session_attachments(conn, account_id, token)
    await write_event(
        conn,
        account_id,
        SESSION_CLOSED,
        None,
        job_id,
        {
            "session": {**row_to_dict(session), "reason": "request" if idle_s is None else "idle"},
            "attachment_ids": [str(r["id"]) for r in rows],
            "attachments": [row_to_dict(r) for r in rows],
        },
    )
    return session, rows


async def idle_sessions(db: asyncpg.Pool | asyncpg.Connection, idle_s: float, limit: int) -> list[asyncpg.Record]:
    """Open sessions with no upload for ``idle_s`` seconds, the longest idle first: (account_id, session_token)."""
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT account_id, session_token FROM upload_sessions WHERE closed_at IS NULL "
        "AND last_upload_at < now() - make_interval(secs => $1) ORDER BY last_upload_at LIMIT $2",
        idle_s,
        limit,
    )
    return rows
