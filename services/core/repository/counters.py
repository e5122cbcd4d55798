"""SQL that counts attachments: from the live counters (schema.sql ``attachment_counts``, kept by
triggers) where they can answer, else ``count(*)``."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.core.repository.attachments import ListFilter, QueryFilter, Where, list_where, query_where


async def count_live_on_target(conn: asyncpg.Connection, account_id: str, target_type: str, target_id: str) -> int:
    """How many attachments a list of the target shows (latest versions, not canceled): what
    ``GET /v1/attachments/count?target_type=&target_id=`` answers, from the same counter."""
    return await count_attachments(conn, ListFilter(account_id, target_type, target_id))


def counter_sql(f: ListFilter) -> tuple[str, list[Any]] | None:
    """The statement that reads ``f``'s count from the live counters (schema.sql ``attachment_counts``),
    or None when they cannot answer it: they hold latest, non-canceled rows per target and per account,
    all and available only (the hidden ones are the difference); canceled rows, older versions and
    descendants need ``count(*)``."""
    if f.include_canceled or f.all_versions or f.ancestor is not None:
        return None
    column = {None: "live", True: "live_available", False: "(live - live_available)"}[f.available]
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


async def count_attachments(conn: asyncpg.Connection, f: ListFilter) -> int:
    counted = counter_sql(f)
    if counted is not None:
        count: int = await conn.fetchval(counted[0], *counted[1])
        return count
    return await _count_where(conn, list_where(f))


async def count_query(conn: asyncpg.Connection, f: QueryFilter) -> int:
    return await _count_where(conn, query_where(f))


async def _count_where(conn: asyncpg.Connection, where: Where) -> int:
    count: int = await conn.fetchval(f"SELECT count(*) FROM attachments WHERE {where.sql()}", *where.params.values)
    return count
