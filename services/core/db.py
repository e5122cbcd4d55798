"""Postgres access: the pool, its readiness check and the schema migration."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import orjson

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schema.sql"
# Any fixed key works; it only has to be the same for every process that migrates.
_MIGRATE_LOCK = 0x61747461636864


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, schema="pg_catalog", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads
        )


async def _no_session_reset(conn: asyncpg.Connection) -> None:
    """asyncpg has already rolled back an open transaction and dropped its listeners."""


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, reset_session: bool = True) -> asyncpg.Pool:
    """``reset_session=False``: release a connection without asyncpg's reset statement (``RESET ALL``,
    ``CLOSE ALL``, ``UNLISTEN *``, ``pg_advisory_unlock_all()``), one round trip per release, for pools
    whose users change no session state: plain statements and transactions only, no SET, LISTEN,
    WITH HOLD cursors or session advisory locks. A connection released inside a transaction is still
    rolled back."""
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        command_timeout=30,
        reset=None if reset_session else _no_session_reset,
    )


async def ping(pool: asyncpg.Pool) -> None:
    """Raises unless the pool can reach Postgres: a readiness check."""
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT 1")


async def migrate(dsn: str, schema_path: Path = SCHEMA_PATH) -> None:
    """Apply schema.sql; it is idempotent, and the advisory lock keeps replicas from racing."""
    sql = schema_path.read_text()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATE_LOCK)
        try:
            await conn.execute(sql)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATE_LOCK)
    finally:
        await conn.close()
