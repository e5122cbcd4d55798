"""Postgres access: the pool, its readiness check and the schema migrations.

The schema is built by numbered, forward-only migrations, ``services/core/migrations/NNNN_name.sql``,
shipped inside the package. :func:`migrate` applies the ones a database has not had, in order, each in
its own transaction with the row that records it in ``attachd_migrations``, under an advisory lock so
that replicas starting together do not race. A migration whose first lines hold ``attachd:
no-transaction`` runs outside a transaction; it must then be a single statement (``CREATE INDEX
CONCURRENTLY``: several statements sent at once are one implicit transaction).

A database made by ``schema.sql`` before there were migrations has no ``attachd_migrations`` table: it
is adopted by applying 0001, which is repeat-safe, and so recorded at version 1. Older code meeting a
newer database (a rollback) applies nothing and says so: migrations only add what old code can ignore.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import asyncpg
import orjson

log = logging.getLogger("attachd.migrate")

MIGRATIONS: Traversable = resources.files(__package__ or "services.core") / "migrations"
MIGRATIONS_TABLE = "attachd_migrations"
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_NO_TRANSACTION = "attachd: no-transaction"
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


@dataclass(frozen=True)
class Migration:
    version: int
    name: str  # the file's name without .sql: 0001_initial
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def transactional(self) -> bool:
        return not any(_NO_TRANSACTION in line for line in self.sql.splitlines()[:5])


def migrations(directory: Traversable = MIGRATIONS) -> list[Migration]:
    """The migrations in ``directory``, by version; raises unless they are numbered 1, 2, 3… without a gap."""
    found = []
    for entry in directory.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _MIGRATION_NAME.match(entry.name)
        if match is None:
            raise ValueError(f"migration {entry.name}: expected NNNN_name.sql (lowercase, digits, underscores)")
        found.append(Migration(int(match[1]), entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3… with no gap or repeat, not {versions}")
    return found


async def applied_migrations(conn: asyncpg.Connection) -> dict[int, str]:
    """Version → checksum of each migration the database has had; empty before the first."""
    if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", MIGRATIONS_TABLE):
        return {}
    rows = await conn.fetch(f"SELECT version, checksum FROM {MIGRATIONS_TABLE} ORDER BY version")
    return {row["version"]: row["checksum"] for row in rows}


async def migrate(dsn: str, *, directory: Traversable = MIGRATIONS, target: int | None = None) -> list[Migration]:
    """Apply the migrations the database has not had (up to version ``target``); returns those applied.

    Under the advisory lock, so that replicas starting together apply each migration once."""
    known = migrations(directory)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATE_LOCK)
        try:
            return await _apply(conn, known, target)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATE_LOCK)
    finally:
        await conn.close()


async def _apply(conn: asyncpg.Connection, known: list[Migration], target: int | None) -> list[Migration]:
    applied = await applied_migrations(conn)
    if not applied and await conn.fetchval("SELECT to_regclass('attachments') IS NOT NULL"):
        log.info("adopting a database made by schema.sql before migrations: applying 0001 again (repeat-safe)")
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
        " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    if ahead := sorted(set(applied) - {m.version for m in known}):
        log.warning(
            "the database has migrations this attachd does not know (%s; it knows up to %d): applying nothing new",
            ", ".join(map(str, ahead)),
            len(known),
        )
    done = []
    for migration in known:
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                log.warning(
                    "migration %s changed since it was applied; applied migrations are never run again", migration.name
                )
            continue
        if target is not None and migration.version > target:
            break
        if ahead:
            # Not applied although newer ones were: a rollback across versions. Leave it to the newer attachd.
            continue
        record = (
            f"INSERT INTO {MIGRATIONS_TABLE} (version, name, checksum) VALUES ($1, $2, $3)",
            migration.version,
            migration.name,
            migration.checksum,
        )
        if migration.transactional:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(*record)
        else:
            await conn.execute(migration.sql)
            await conn.execute(*record)
        log.info("applied migration %s", migration.name)
        done.append(migration)
    return done


async def schema_version(dsn: str) -> int:
    """The highest migration the database has had; 0 before the first."""
    conn = await asyncpg.connect(dsn)
    try:
        return max(await applied_migrations(conn), default=0)
    finally:
        await conn.close()
