"""SQL for attachments. Every statement is scoped by account; every change writes its outbox event
in the same transaction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.core import listing
from services.core.records import COLUMNS, row_to_dict
from services.core.sqlparams import Params

INSERT_COLUMNS = (
    "id",
    "account_id",
    "target_type",
    "target_id",
    "field",
    "parent_type",
    "parent_attachment_id",
    "version",
    "version_root",
    "ancestors",
    "attachment_type",
    "name",
    "filename",
    "content_type",
    "size",
    "sha256",
    "storage_key",
    "url",
    "width",
    "height",
    "variants",
    "display_order",
    "available",
    "status",
    "created_from",
    "publish",
    "session_token",
    "created_by_type",
    "created_by_id",
    "impersonator_id",
)
_INSERT_SQL = (
    f"INSERT INTO attachments ({', '.join(INSERT_COLUMNS)}) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(INSERT_COLUMNS) + 1))}) "
    f"ON CONFLICT (id) DO NOTHING RETURNING {COLUMNS}"
)


SESSION_CLOSED = "upload_session.closed"
SESSION_COLUMNS = "session_token, opened_at, last_upload_at, closed_at"
_EVENT_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtextextended('attachd-events:' || $1, 0))"


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


async def job_already_applied(conn, job_id: str, attachment_id: uuid.UUID) -> bool:
    """True when this job's change is committed: a re-run must report success, not "not found"."""
    return await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM outbox WHERE job_id = $1 AND attachment_id = $2)", job_id, attachment_id
    )


async def insert_attachment(
    conn: asyncpg.Connection, values: Mapping[str, Any], job_id: str, *, emit_event: bool = True
) -> tuple[asyncpg.Record, bool]:
    """Insert once: a re-run of the same job finds the row and writes no second event."""
    row = await conn.fetchrow(_INSERT_SQL, *(values.get(c) for c in INSERT_COLUMNS))
    if row is None:
        existing = await conn.fetchrow(f"SELECT {COLUMNS} FROM attachments WHERE id = $1", values["id"])
        return existing, False
    if emit_event:
        await announce_created(conn, row, job_id)
    return row, True


async def announce_created(conn, row: asyncpg.Record, job_id: str) -> None:
    await write_event(
        conn, row["account_id"], "attachment.created", row["id"], job_id, {"attachment": row_to_dict(row)}
    )


async def touch_upload_session(conn, account_id: str, token: str) -> None:
    """Open the session, or keep it open: an upload to a closed session reopens it."""
    await conn.execute(
        "INSERT INTO upload_sessions (account_id, session_token) VALUES ($1, $2) "
        "ON CONFLICT (account_id, session_token) DO UPDATE SET last_upload_at = now(), closed_at = NULL",
        account_id,
        token,
    )


async def get_upload_session(conn, account_id: str, token: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {SESSION_COLUMNS} FROM upload_sessions WHERE account_id = $1 AND session_token = $2", account_id, token
    )


async def session_attachments(conn, account_id: str, token: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {COLUMNS} FROM attachments WHERE account_id = $1 AND session_token = $2 "
        f"AND canceled_at IS NULL ORDER BY seq",
        account_id,
        token,
    )


async def close_upload_session(
    conn, account_id: str, token: str, job_id: str | None, *, idle_s: float | None = None
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


async def job_wrote_event(conn, job_id: str, event_type: str) -> bool:
    return await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM outbox WHERE job_id = $1 AND event_type = $2)", job_id, event_type
    )


async def next_version(conn, account_id: str, parent_id: uuid.UUID, new_id: uuid.UUID) -> tuple[int, uuid.UUID]:
    """The number and root of a new version of ``parent_id``'s file; the old latest stops being latest."""
    root = await conn.fetchval(
        "SELECT coalesce(version_root, id) FROM attachments WHERE id = $1 AND account_id = $2 FOR UPDATE",
        parent_id,
        account_id,
    )
    # Locking the root serializes concurrent versions of one file.
    await conn.execute("SELECT 1 FROM attachments WHERE id = $1 FOR UPDATE", root)
    existing = await conn.fetchval("SELECT version FROM attachments WHERE id = $1", new_id)
    if existing is not None:  # a re-run of the job that made it
        return existing, root
    latest = await conn.fetchval(
        "SELECT max(version) FROM attachments WHERE account_id = $1 AND (id = $2 OR version_root = $2)",
        account_id,
        root,
    )
    await conn.execute(
        "UPDATE attachments SET is_latest = false WHERE account_id = $1 AND (id = $2 OR "
        "version_root = $2) AND is_latest",
        account_id,
        root,
    )
    return latest + 1, root


async def get_attachment(
    conn, account_id: str, attachment_id: uuid.UUID, *, include_canceled: bool = False, columns: str = COLUMNS
) -> asyncpg.Record | None:
    sql = f"SELECT {columns} FROM attachments WHERE id = $1 AND account_id = $2"
    if not include_canceled:
        sql += " AND canceled_at IS NULL"
    return await conn.fetchrow(sql, attachment_id, account_id)


async def get_for_download(conn, attachment_id: uuid.UUID) -> asyncpg.Record | None:
    """By id alone: only for signed links, whose signature already proves the caller was given it."""
    return await conn.fetchrow(
        f"SELECT {COLUMNS} FROM attachments WHERE id = $1 AND canceled_at IS NULL", attachment_id
    )


async def update_attachment(
    conn: asyncpg.Connection, account_id: str, attachment_id: uuid.UUID, changes: Mapping[str, Any], job_id: str
) -> asyncpg.Record | None:
    names = list(changes)
    assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(names, start=3))
    row = await conn.fetchrow(
        f"UPDATE attachments SET {assignments}, updated_at = now() "
        f"WHERE id = $1 AND account_id = $2 AND canceled_at IS NULL RETURNING {COLUMNS}",
        attachment_id,
        account_id,
        *(changes[n] for n in names),
    )
    if row is not None:
        await write_event(
            conn,
            account_id,
            "attachment.updated",
            attachment_id,
            job_id,
            {"changes": dict(changes), "attachment": row_to_dict(row)},
        )
    return row


async def cancel_attachment(
    conn: asyncpg.Connection, account_id: str, attachment_id: uuid.UUID, job_id: str
) -> asyncpg.Record | None:
    row = await conn.fetchrow(
        f"UPDATE attachments SET canceled_at = now(), updated_at = now() "
        f"WHERE id = $1 AND account_id = $2 AND canceled_at IS NULL RETURNING {COLUMNS}",
        attachment_id,
        account_id,
    )
    if row is not None:
        # Deleting the latest version brings back the one before it.
        await conn.execute(
            "UPDATE attachments SET is_latest = true WHERE id = (SELECT id FROM attachments WHERE account_id = $1 "
            "AND (id = $2 OR version_root = $2) AND canceled_at IS NULL ORDER BY version DESC LIMIT 1) "
            "AND NOT EXISTS (SELECT 1 FROM attachments WHERE account_id = $1 AND (id = $2 OR version_root = $2) "
            "AND canceled_at IS NULL AND is_latest)",
            account_id,
            row["version_root"] or row["id"],
        )
        await write_event(
            conn, account_id, "attachment.canceled", attachment_id, job_id, {"attachment": row_to_dict(row)}
        )
    return row


async def count_live_on_target(conn, account_id: str, target_type: str, target_id: str) -> int:
    return await conn.fetchval(
        "SELECT count(*) FROM attachments WHERE account_id = $1 AND target_type = $2 AND target_id = $3 "
        "AND canceled_at IS NULL",
        account_id,
        target_type,
        target_id,
    )


class Where:
    """A growing ``WHERE`` clause; its values are bound in ``params``, the statement's one ``Params``."""

    def __init__(self, params: Params | None = None) -> None:
        self.clauses: list[str] = []
        self.params = Params() if params is None else params

    def add(self, clause: str, *values: Any) -> None:
        """Add ``clause``, each ``?`` in it bound to the next of ``values``."""
        for value in values:
            clause = clause.replace("?", self.params.add(value), 1)
        self.clauses.append(clause)

    def sql(self) -> str:
        return " AND ".join(self.clauses) or "TRUE"


@dataclass(frozen=True)
class ListFilter:
    account_id: str
    target_type: str | None = None
    target_id: str | None = None
    ancestor: str | None = None  # 'Ticket:42': everything on it or anywhere below it
    include_canceled: bool = False
    available_only: bool = False
    all_versions: bool = False


def list_where(f: ListFilter) -> Where:
    where = Where()
    where.add("account_id = ?", f.account_id)
    if f.ancestor is not None:
        where.add("ancestors @> ARRAY[?]::text[]", f.ancestor)
    else:
        if f.target_type is not None:
            where.add("target_type = ?", f.target_type)
        if f.target_id is not None:
            where.add("target_id = ?", f.target_id)
    if not f.include_canceled:
        where.add("canceled_at IS NULL")
    if not f.all_versions:
        where.add("is_latest")
    if f.available_only:
        where.add("available")
    return where


async def list_attachments(
    conn, f: ListFilter, order: Sequence[listing.SortKey], limit: int, cursor: str | None, *, columns: str = COLUMNS
) -> tuple[list[asyncpg.Record], str | None]:
    order = tuple(order)
    where = list_where(f)
    if cursor:
        values, last_id = listing.decode_cursor(cursor, order)
        where.add(listing.after_sql(order, values, last_id, where.params))
    rows = await conn.fetch(
        f"SELECT {columns} FROM attachments WHERE {where.sql()} ORDER BY {listing.order_sql(order)} "
        f"LIMIT {int(limit) + 1}",
        *where.params.values,
    )
    next_cursor = listing.encode_cursor(order, rows[limit - 1]) if len(rows) > limit else None
    return list(rows[:limit]), next_cursor


def counter_sql(f: ListFilter) -> tuple[str, list[Any]] | None:
    """The statement that reads ``f``'s count from the live counters (schema.sql ``attachment_counts``),
    or None when they cannot answer it: they hold latest, non-canceled rows per target and per account,
    all and available only; canceled rows, older versions and descendants need ``count(*)``."""
    if f.include_canceled or f.all_versions or f.ancestor is not None:
        return None
    column = "live_available" if f.available_only else "live"
    if f.target_type is None and f.target_id is None:
        return (
            f"SELECT coalesce((SELECT {column} FROM account_attachment_counts WHERE account_id = $1), 0)",
            [f.account_id],
        )
    if f.target_type is None:
        return None
    if f.target_id is None:
        return (
            f"SELECT coalesce(sum({column}), 0)::bigint FROM attachment_counts "
            f"WHERE account_id = $1 AND target_type = $2",
            [f.account_id, f.target_type],
        )
    return (
        f"SELECT coalesce((SELECT {column} FROM attachment_counts WHERE account_id = $1 "
        f"AND target_type = $2 AND target_id = $3), 0)",
        [f.account_id, f.target_type, f.target_id],
    )


async def count_attachments(conn, f: ListFilter) -> int:
    counted = counter_sql(f)
    if counted is not None:
        return await conn.fetchval(counted[0], *counted[1])
    where = list_where(f)
    return await conn.fetchval(f"SELECT count(*) FROM attachments WHERE {where.sql()}", *where.params.values)
