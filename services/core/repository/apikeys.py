"""SQL of the API keys (schema.sql ``api_keys``): create, find by hash, list, revoke."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TypeAlias

import asyncpg

from services.core.apikeys import StoredKey

# What `attachd keys list` shows: everything but the hash.
LISTED = (
    "id, name, shown, account_id, actor_type, actor_id, scopes, profile, bindings, created_at, expires_at, revoked_at"
)
Db: TypeAlias = asyncpg.Connection | asyncpg.Pool


async def insert_key(
    db: Db,
    *,
    key_hash: bytes,
    shown: str,
    account_id: str,
    name: str | None,
    actor_type: str,
    actor_id: str,
    scopes: Sequence[str],
    profile: str | None,
    bindings: Mapping[str, str],
    expires_at: dt.datetime | None,
) -> asyncpg.Record:
    row: asyncpg.Record = await db.fetchrow(
        "INSERT INTO api_keys (key_hash, shown, account_id, name, actor_type, actor_id, scopes, profile, bindings,"
        f" expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {LISTED}",
        key_hash,
        shown,
        account_id,
        name,
        actor_type,
        actor_id,
        list(scopes),
        profile,
        dict(bindings),
        expires_at,
    )
    return row


async def key_by_hash(db: Db, key_hash: bytes) -> tuple[StoredKey, dt.datetime] | None:
    """The key with this hash (None: no such key) and the database's clock to judge its expiry by: the
    same clock for every replica."""
    row = await db.fetchrow(
        "SELECT now() AS checked_at, id, account_id, actor_type, actor_id, scopes, profile, bindings, expires_at,"
        " revoked_at FROM api_keys WHERE key_hash = $1",
        key_hash,
    )
    if row is None:
        return None
    key = StoredKey(
        id=row["id"],
        account_id=row["account_id"],
        actor_type=row["actor_type"],
        actor_id=row["actor_id"],
        scopes=frozenset(row["scopes"]),
        profile=row["profile"],
        bindings=row["bindings"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )
    return key, row["checked_at"]


async def list_keys(db: Db, account_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        f"SELECT {LISTED} FROM api_keys WHERE account_id = $1 ORDER BY id", account_id
    )
    return rows


async def revoke_key(db: Db, key_id: int) -> asyncpg.Record | None:
    """Revoke the key (a key revoked before keeps its first revocation time); None: no such key."""
    row: asyncpg.Record | None = await db.fetchrow(
        f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING {LISTED}", key_id
    )
    return row
