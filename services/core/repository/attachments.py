"""SQL for attachments: insert, read, list, change. Every statement is scoped by account (the
signed-link download and the purge of unlinked uploads excepted); every change writes its outbox event
in the same transaction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.core import listing
from services.core.contract import AttachmentRef
from services.core.fields import COLUMN_FIELDS
from services.core.querylang import Compiled
from services.core.records import COLUMNS, row_to_dict
from services.core.repository.events import write_event
from services.core.sqlparams import Params

# insert_attachment takes a mapping keyed by these.
INSERT_COLUMNS = tuple(spec.name for spec in COLUMN_FIELDS if spec.inserted)
_INSERT_SQL = (
    f"INSERT INTO attachments ({', '.join(INSERT_COLUMNS)}) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(INSERT_COLUMNS) + 1))}) "
    f"ON CONFLICT (id) DO NOTHING RETURNING {COLUMNS}"
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


async def announce_created(conn: asyncpg.Connection, row: asyncpg.Record, job_id: str) -> None:
    await write_event(
        conn, row["account_id"], "attachment.created", row["id"], job_id, {"attachment": row_to_dict(row)}
    )


async def next_version(
    conn: asyncpg.Connection, account_id: str, parent_id: uuid.UUID, new_id: uuid.UUID
) -> tuple[int, uuid.UUID]:
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


async def get_attachments(conn: asyncpg.Connection, account_id: str, ids: Sequence[uuid.UUID]) -> list[asyncpg.Record]:
    """The rows with these ids, canceled or not, in the order of ``ids``."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {COLUMNS} FROM attachments WHERE account_id = $1 AND id = ANY($2::uuid[]) "
        f"ORDER BY array_position($2::uuid[], id)",
        account_id,
        ids,
    )
    return rows


async def attachments_of_upload(
    conn: asyncpg.Connection, account_id: str, upload_id: uuid.UUID
) -> list[asyncpg.Record]:
    """What an upload committed, by the database alone: the attachment with the upload's id (a one-file
    upload) or those its job announced (many files)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {COLUMNS} FROM attachments WHERE account_id = $1 AND (id = $2 OR id IN (SELECT attachment_id "
        f"FROM outbox WHERE account_id = $1 AND job_id = $3 AND event_type = 'attachment.created')) ORDER BY seq",
        account_id,
        upload_id,
        str(upload_id),
    )
    return rows


def _ref_column(ref: AttachmentRef) -> str:
    """The column that names an attachment by this kind of reference: its UUID ``id`` or its integer ``seq``."""
    return "id" if isinstance(ref, uuid.UUID) else "seq"


async def get_attachment(
    conn: asyncpg.Connection,
    account_id: str,
    attachment_id: AttachmentRef,
    *,
    include_canceled: bool = False,
    columns: str = COLUMNS,
) -> asyncpg.Record | None:
    """The attachment with this id or integer id, in this account only."""
    sql = f"SELECT {columns} FROM attachments WHERE {_ref_column(attachment_id)} = $1 AND account_id = $2"
    if not include_canceled:
        sql += " AND canceled_at IS NULL"
    return await conn.fetchrow(sql, attachment_id, account_id)


async def resolve_ref(conn: asyncpg.Connection, account_id: str, ref: AttachmentRef) -> uuid.UUID | None:
    """The UUID of the account's attachment named by ``ref`` (canceled or not); None when it has none."""
    ident: uuid.UUID | None = await conn.fetchval(
        f"SELECT id FROM attachments WHERE {_ref_column(ref)} = $1 AND account_id = $2", ref, account_id
    )
    return ident


async def seqs_of(conn: asyncpg.Connection, account_id: str, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    """The integer ids of these attachments of the account (for rendering references as integers)."""
    rows = await conn.fetch(
        "SELECT id, seq FROM attachments WHERE account_id = $1 AND id = ANY($2::uuid[])", account_id, list(ids)
    )
    return {row["id"]: row["seq"] for row in rows}


async def get_for_download(conn: asyncpg.Connection, attachment_id: uuid.UUID) -> asyncpg.Record | None:
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
    available: bool | None = None  # True: only available ones, False: only hidden ones, None: both
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
    if f.available is not None:
        where.add("available" if f.available else "NOT available")
    return where


@dataclass(frozen=True)
class QueryFilter:
    """A query-language filter of an account. ``condition`` was compiled on its own (placeholders from
    $1): the statement binds its other values after the condition's."""

    account_id: str
    condition: Compiled
    include_canceled: bool = False
    all_versions: bool = False


def query_where(f: QueryFilter) -> Where:
    where = Where(Params(f.condition.params))
    where.add("account_id = ?", f.account_id)
    where.add(f"({f.condition.sql})")
    if not f.include_canceled:
        where.add("canceled_at IS NULL")
    if not f.all_versions:
        where.add("is_latest")
    return where


async def list_attachments(
    conn: asyncpg.Connection,
    f: ListFilter,
    order: Sequence[listing.SortKey],
    limit: int,
    cursor: str | None,
    *,
    columns: str = COLUMNS,
) -> tuple[list[asyncpg.Record], str | None]:
    """A page of ``f`` in ``order`` after ``cursor``, and the cursor of the next page (None: the last)."""
    return await _page(conn, list_where(f), tuple(order), limit, cursor, columns)


async def query_attachments(
    conn: asyncpg.Connection,
    f: QueryFilter,
    limit: int,
    cursor: str | None,
    *,
    columns: str = COLUMNS,
    offset: int = 0,
) -> tuple[list[asyncpg.Record], str | None]:
    """A page of ``f`` in id order after ``cursor`` (or, for numbered pages, after skipping ``offset``
    rows), and the cursor of the next page (None: the last)."""
    return await _page(conn, query_where(f), listing.BY_ID, limit, cursor, columns, offset)


async def _page(
    conn: asyncpg.Connection,
    where: Where,
    order: tuple[listing.SortKey, ...],
    limit: int,
    cursor: str | None,
    columns: str,
    offset: int = 0,
) -> tuple[list[asyncpg.Record], str | None]:
    if cursor:
        values, last_id = listing.decode_cursor(cursor, order)
        where.add(listing.after_sql(order, values, last_id, where.params))
    rows = await conn.fetch(
        f"SELECT {columns} FROM attachments WHERE {where.sql()} ORDER BY {listing.order_sql(order)} "
        f"LIMIT {int(limit) + 1} OFFSET {int(offset)}",
        *where.params.values,
    )
    next_cursor = listing.encode_cursor(order, rows[limit - 1]) if len(rows) > limit else None
    return list(rows[:limit]), next_cursor


# -- uploads never linked to a target ---------------------------------------------------------------


async def unlinked_uploads(conn: asyncpg.Connection, older_than_s: float, limit: int = 500) -> list[asyncpg.Record]:
    """Live uploads without a target ``older_than_s`` seconds after they were made or taken off their last
    one, with what their bytes are stored under: (id, account_id, storage_key, variants)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT id, account_id, storage_key, variants FROM attachments WHERE target_id IS NULL "
        "AND canceled_at IS NULL AND coalesce(unlinked_at, created_at) < now() - make_interval(secs => $1) "
        "LIMIT $2",
        older_than_s,
        limit,
    )
    return rows


async def delete_unlinked(conn: asyncpg.Connection, account_id: str, attachment_id: uuid.UUID) -> bool:
    """Delete an upload (row and all) that is still unlinked, with its ``attachment.purged`` event."""
    deleted = await conn.fetchrow(
        "DELETE FROM attachments WHERE id = $1 AND target_id IS NULL RETURNING id, account_id", attachment_id
    )
    if deleted is None:
        return False
    await write_event(
        conn,
        account_id,
        "attachment.purged",
        attachment_id,
        f"purge:{attachment_id}",
        {"attachment_id": str(attachment_id)},
    )
    return True
