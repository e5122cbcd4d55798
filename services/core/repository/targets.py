"""SQL for the target hierarchy and for linking uploads to targets.

Every change to the hierarchy of an account takes that account's advisory lock
exclusively; an upload reading a chain takes it shared, so no upload commits
with a chain that a concurrent move has just made stale.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Literal

import asyncpg

from services.core import hierarchy
from services.core.contract import AttachmentRef
from services.core.errors import bad_request
from services.core.records import COLUMNS, row_to_dict
from services.core.repository.events import write_event

_LOCK_SQL = "SELECT pg_advisory_xact_lock{}(hashtextextended('attachd-targets:' || $1, 0))"


async def lock_hierarchy(conn: asyncpg.Connection, account_id: str, *, shared: bool = False) -> None:
    await conn.execute(_LOCK_SQL.format("_shared" if shared else ""), account_id)


async def chain_of(conn: asyncpg.Connection, account_id: str, target_type: str, target_id: str) -> list[str]:
    chain = await conn.fetchval(
        "SELECT ancestors FROM targets WHERE account_id = $1 AND target_type = $2 AND target_id = $3",
        account_id,
        target_type,
        target_id,
    )
    return list(chain) if chain else [hierarchy.node(target_type, target_id)]


async def attachment_ancestors(conn: asyncpg.Connection, attachment_id: uuid.UUID) -> list[str]:
    """The chain of an attachment, for one nested under it."""
    chain: list[str] = await conn.fetchval("SELECT ancestors FROM attachments WHERE id = $1", attachment_id)
    return chain


async def place_target(
    conn: asyncpg.Connection, account_id: str, target_type: str, target_id: str, parent: tuple[str, str] | None
) -> tuple[list[str], dict[str, Any] | None]:
    """Put a target under ``parent`` (or at the top); re-roots everything below it. Needs the lock.

    Returns the target's chain and, if it moved, the ``target.moved`` payload: the caller writes that
    event last in its transaction (see ``events.write_event``)."""
    own = hierarchy.node(target_type, target_id)
    if parent is None:
        chain = [own]
    else:
        parent_chain = await chain_of(conn, account_id, *parent)
        if len(parent_chain) == 1:  # the parent is new to us: record it at the top
            await conn.execute(
                "INSERT INTO targets (account_id, target_type, target_id, ancestors) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT DO NOTHING",
                account_id,
                parent[0],
                parent[1],
                parent_chain,
            )
        chain = hierarchy.chain_under(own, parent_chain)
    old = await conn.fetchval(
        "SELECT ancestors FROM targets WHERE account_id = $1 AND target_type = $2 AND target_id = $3 FOR UPDATE",
        account_id,
        target_type,
        target_id,
    )
    await conn.execute(
        "INSERT INTO targets (account_id, target_type, target_id, parent_type, parent_id, ancestors) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account_id, target_type, target_id) DO UPDATE "
        "SET parent_type = $4, parent_id = $5, ancestors = $6, updated_at = now()",
        account_id,
        target_type,
        target_id,
        parent and parent[0],
        parent and parent[1],
        chain,
    )
    # A target never placed before had the chain [own]: attachments may already hang on it with that.
    if list(old or [own]) != chain:
        # Everything whose chain passes through this target keeps its part below it and takes the new top.
        for table in ("targets", "attachments"):
            await conn.execute(
                f"UPDATE {table} SET ancestors = ancestors[1:array_position(ancestors, $2) - 1] || $3::text[] "
                f"WHERE account_id = $1 AND ancestors @> ARRAY[$2]",
                account_id,
                own,
                chain,
            )
    if old is not None and list(old) != chain:
        return chain, {
            "target": {"type": target_type, "id": target_id},
            "parent": None if parent is None else {"type": parent[0], "id": parent[1]},
            "ancestors": chain,
        }
    return chain, None


async def _carry_nested(conn: asyncpg.Connection, account_id: str, moved: Sequence[uuid.UUID]) -> None:
    """What is nested under attachments that moved keeps its part of the chain below them and takes theirs."""
    if moved:
        await conn.execute(
            "UPDATE attachments a SET ancestors = a.ancestors[1:array_position(a.ancestors, 'Attachment:' || p.id)] "
            "|| p.ancestors FROM attachments p WHERE p.account_id = $1 AND p.id = ANY($2::uuid[]) "
            "AND a.account_id = $1 AND a.ancestors @> ARRAY['Attachment:' || p.id]",
            account_id,
            list(moved),
        )


async def set_links(
    conn: asyncpg.Connection,
    account_id: str,
    target_type: str,
    target_id: str,
    field: str,
    refs: Sequence[AttachmentRef],
    job_id: str,
) -> list[asyncpg.Record]:
    """Make ``refs`` (ids or integer ids) exactly the attachments linked to the target's ``field``; the
    others are unlinked: taken off the target, kept until the unlinked TTL, linkable again meanwhile."""
    await lock_hierarchy(conn, account_id, shared=True)
    chain = await chain_of(conn, account_id, target_type, target_id)
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM attachments WHERE account_id = $1 AND (id = ANY($2::uuid[]) "
        "OR seq = ANY($3::bigint[])) AND canceled_at IS NULL FOR UPDATE",
        account_id,
        [r for r in refs if isinstance(r, uuid.UUID)],
        [r for r in refs if not isinstance(r, uuid.UUID)],
    )
    found: dict[AttachmentRef, asyncpg.Record] = {}
    for r in rows:
        found[r["id"]] = found[r["seq"]] = r
    ids: list[uuid.UUID] = []
    for index, ref in enumerate(refs):
        row = found.get(ref)
        linked_here = row is not None and (row["target_type"], row["target_id"], row["field"]) == (
            target_type,
            target_id,
            field,
        )
        free = row is not None and row["target_id"] is None and row["parent_type"] in (None, target_type)
        if row is None or not (linked_here or free):
            why = "does not exist" if row is None else "is linked to another record"
            raise bad_request("invalid_link", f"attachment {ref} {why}", f"ids[{index}]")
        ids.append(row["id"])
    ids = list(dict.fromkeys(ids))  # an attachment named twice (by id and by integer id) is linked once

    # A file is linked or unlinked with its older versions (one chain, named by its root).
    roots = list({r["version_root"] or r["id"] for r in rows if r["id"] in ids})
    # Unlinked, not deleted: back to waiting for a record, until the unlinked TTL (from now) purges it.
    unlinked = await conn.fetch(
        f"UPDATE attachments SET target_type = NULL, target_id = NULL, ancestors = '{{}}', unlinked_at = now(), "
        f"updated_at = now() WHERE account_id = $1 AND target_type = $2 AND target_id = $3 "
        f"AND field IS NOT DISTINCT FROM $4 AND canceled_at IS NULL AND NOT (coalesce(version_root, id) = "
        f"ANY($5::uuid[])) RETURNING {COLUMNS}",
        account_id,
        target_type,
        target_id,
        field,
        roots,
    )
    linked = await conn.fetch(
        f"UPDATE attachments SET target_type = $2, target_id = $3, field = $4, ancestors = $5, unlinked_at = NULL, "
        f"updated_at = now() WHERE account_id = $1 AND coalesce(version_root, id) = ANY($6::uuid[]) "
        f"AND target_id IS NULL AND canceled_at IS NULL RETURNING {COLUMNS}",
        account_id,
        target_type,
        target_id,
        field,
        chain,
        roots,
    )
    await _carry_nested(conn, account_id, [r["id"] for r in (*unlinked, *linked)])
    for row in unlinked:
        await write_event(conn, account_id, "attachment.unlinked", row["id"], job_id, {"attachment": row_to_dict(row)})
    for row in linked:
        await write_event(conn, account_id, "attachment.linked", row["id"], job_id, {"attachment": row_to_dict(row)})
    now_linked: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {COLUMNS} FROM attachments WHERE account_id = $1 AND id = ANY($2::uuid[]) ORDER BY array_position"
        f"($2::uuid[], id)",
        account_id,
        list(ids),
    )
    return now_linked


async def target_standing(
    conn: asyncpg.Connection, account_id: str, target_type: str, target_id: str
) -> Literal["placed", "holding"] | None:
    """What the account knows of a target: ``placed`` in the hierarchy, ``holding`` attachments (live or
    deleted) without having been placed, or None: no such target."""
    standing: str | None = await conn.fetchval(
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM targets WHERE account_id = $1 AND target_type = $2 "
        "AND target_id = $3) THEN 'placed' WHEN EXISTS (SELECT 1 FROM attachments WHERE account_id = $1 "
        "AND target_type = $2 AND target_id = $3) THEN 'holding' END",
        account_id,
        target_type,
        target_id,
    )
    return standing  # type: ignore[return-value]  # one of the CASE's values
