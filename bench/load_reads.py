"""Load a realistic read-benchmark database: 2,000,000 attachments in 10,000 accounts.

    python -m bench.load_reads                  # start Postgres in bench/out/reads-pg, load once
    python -m bench.load_reads --force          # drop the data and load again
    ATTACHD_BENCH_DATABASE_URL=postgresql://... python -m bench.load_reads   # your own server

The shape, all from one seed so every run makes the same data:

- account sizes follow a Zipf law fitted so the largest account has ``--largest`` rows (150,000)
  and all accounts together ``--rows``; the smallest have a few dozen;
- each account has a target hierarchy, Project -> Ticket -> TicketNote / TimeEntry, recorded in
  ``targets`` with the same ``ancestors`` chains the attachments carry; about ``--per-target`` (50)
  attachments per target;
- names, file names, content types and sizes by kind (photos, screenshots, PDFs, office files,
  archives, links), thumbnails for images, display orders, workflow fields, creators;
- created_at spread over three years, and the rows written in created_at order (as a live service
  would have written them), so one target's rows lie on many heap pages, not a few;
- about 4% canceled, 4% of files with 2-4 versions (older ones is_latest = false), 1% nested
  under another attachment, a few unlinked uploads.

Loading is COPY (``copy_records_to_table``) into an unlogged staging table, one INSERT ... ORDER BY
created_at into ``attachments`` with its secondary indexes dropped, then schema.sql again (which
builds the indexes), the live counts, VACUUM ANALYZE. About 3-4 minutes on 2 cores. A
``bench_meta`` row remembers what was loaded; later runs reuse the data.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import orjson

from services.core import db

# The whole schema, repeat-safe: run again, it rebuilds the secondary indexes dropped for the load.
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schema.sql"

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
PG_DIR = OUT / "reads-pg"
LOADER_VERSION = 1
# Settings of the bench server (bench/out/reads-pg only; a server given by URL is used as it is).
PG_SETTINGS = {"shared_buffers": "1GB", "effective_cache_size": "4GB", "max_connections": "200"}

STAGING_COLUMNS = (
    "id",
    "account_id",
    "target_type",
    "target_id",
    "field",
    "parent_type",
    "parent_attachment_id",
    "version_of",
    "version",
    "version_root",
    "is_latest",
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
    "created_at",
    "updated_at",
    "canceled_at",
)
TARGET_COLUMNS = ("account_id", "target_type", "target_id", "parent_type", "parent_id", "ancestors", "updated_at")

END = dt.datetime(2025, 11, 1, tzinfo=dt.UTC)
START = END - dt.timedelta(days=3 * 365)
SPAN_S = (END - START).total_seconds()


# --------------------------------------------------------------------------------------------- the server


def bench_database_url() -> tuple[str, object | None]:
    """The URL to use and, for the embedded server, the handle that stops it."""
    url = os.environ.get("ATTACHD_BENCH_DATABASE_URL")
    if url:
        return url, None
    from services.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(PG_DIR, database="attachd_bench")
    url = server.start()
    if asyncio.run(_configure(url)):  # shared_buffers needs a restart
        server.stop()
        server = EmbeddedPostgres(PG_DIR, database="attachd_bench")
        url = server.start()
    return url, server


async def _configure(url: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        changed = False
        for name, value in PG_SETTINGS.items():
            current = await conn.fetchval("SELECT current_setting($1)", name)
            if current == value:
                continue
            await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            print(f"postgres: {name} {current} -> {value} (restarting)", flush=True)
            changed = True
        return changed
    finally:
        await conn.close()


# --------------------------------------------------------------------------------------------- the data


@dataclass(frozen=True)
class Params:
    rows: int = 2_000_000
    accounts: int = 10_000
    largest: int = 150_000
    per_target: int = 50
    seed: int = 20251101
    per_account_ids: bool = False  # target ids numbered per account ('Ticket:1' in every account)

    def tag(self) -> str:
        return (
            f"v{LOADER_VERSION} rows={self.rows} accounts={self.accounts} largest={self.largest} "
            f"per_target={self.per_target} seed={self.seed} per_account_ids={self.per_account_ids}"
        )


def account_sizes(p: Params) -> list[int]:
    """Zipf sizes: size(rank) = largest / rank**s, with s chosen so they add up to ``rows``."""

    def total(s: float) -> float:
        return sum(p.largest / (r**s) for r in range(1, p.accounts + 1))

    lo, hi = 0.01, 5.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if total(mid) > p.rows else (lo, mid)
    sizes = [max(1, round(p.largest / (r**hi))) for r in range(1, p.accounts + 1)]
    sizes[-1] += p.rows - sum(sizes)  # exact total; the smallest absorbs the rounding
    if sizes[-1] < 1:
        raise ValueError("parameters leave no rows for the smallest account")
    return sizes


def account_name(index: int) -> str:
    return f"acct-{index:05d}"


IMAGE_SIZES = ((4032, 3024), (3024, 4032), (1920, 1080), (2560, 1600), (1280, 720), (800, 600), (1170, 2532))
WORDS = (
    "design",
    "spec",
    "invoice",
    "contract",
    "budget",
    "roadmap",
    "report",
    "notes",
    "draft",
    "final",
    "review",
    "plan",
    "estimate",
    "quote",
    "floor-plan",
    "wireframe",
    "summary",
    "minutes",
    "agenda",
    "timesheet",
    "receipt",
    "proposal",
    "brief",
    "mockup",
    "diagram",
    "checklist",
    "backlog",
    "export",
)
# kind: (weight, extension, content type, median bytes)
KINDS = (
    (18, "jpg", "image/jpeg", 1_800_000),
    (14, "png", "image/png", 420_000),
    (2, "heic", "image/heif", 1_500_000),
    (1, "gif", "image/gif", 350_000),
    (2, "webp", "image/webp", 200_000),
    (22, "pdf", "application/pdf", 310_000),
    (9, "docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", 90_000),
    (7, "xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", 60_000),
    (2, "pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation", 2_400_000),
    (5, "csv", "text/csv", 40_000),
    (5, "txt", "text/plain", 4_000),
    (3, "zip", "application/zip", 6_000_000),
    (1, "mp4", "video/mp4", 9_000_000),
    (1, "mp3", "audio/mpeg", 3_000_000),
)
KIND_WEIGHTS = [k[0] for k in KINDS]
LINK_TYPES = (("URL", 4), ("FILE_LINK", 2), ("FOLDER_LINK", 2))


class Generator:
    def __init__(self, p: Params) -> None:
        self.p = p
        self.rng = random.Random(p.seed)
        self.next_id = {"Project": 1000, "Ticket": 50_000, "TicketNote": 300_000, "TimeEntry": 700_000}

    # ids ---------------------------------------------------------------------------------------------
    def uuid7(self, when: dt.datetime) -> uuid.UUID:
        ms = int(when.timestamp() * 1000)
        bits = self.rng.getrandbits(74)
        value = (ms << 80) | (0x7 << 76) | ((bits >> 62) << 64) | (0b10 << 62) | (bits & ((1 << 62) - 1))
        return uuid.UUID(int=value)

    def target_id(self, kind: str, counters: dict[str, int]) -> str:
        source = counters if self.p.per_account_ids else self.next_id
        source[kind] = source.get(kind, 0) + 1
        return str(source[kind])

    # one account -------------------------------------------------------------------------------------
    def account(self, index: int, n_rows: int) -> tuple[list[tuple], list[tuple]]:
        rng = self.rng
        account = account_name(index)
        n_targets = max(1, round(n_rows / self.p.per_target))
        counters: dict[str, int] = {}
        begin = START + dt.timedelta(seconds=rng.random() * SPAN_S * 0.8)
        window = (END - begin).total_seconds()
        users = max(2, int(math.sqrt(n_rows)))

        # The hierarchy: projects of tickets, each ticket with notes and time entries.
        targets: list[tuple[str, str, list[str], dt.datetime]] = []  # type, id, chain, created
        target_rows: list[tuple] = []

        def add(kind: str, parent: tuple[str, str, list[str], dt.datetime] | None) -> tuple:
            tid = self.target_id(kind, counters)
            node = f"{kind}:{tid}"
            chain = [node] if parent is None else [node, *parent[2]]
            if parent is None:
                created = begin + dt.timedelta(seconds=rng.random() * window * 0.9)
            else:
                created = min(END, parent[3] + dt.timedelta(seconds=rng.expovariate(1 / (14 * 86400))))
            t = (kind, tid, chain, created)
            targets.append(t)
            target_rows.append((account, kind, tid, parent and parent[0], parent and parent[1], chain, created))
            return t

        while len(targets) < n_targets:
            project = add("Project", None)
            for _ in range(rng.randint(4, 12)):
                if len(targets) >= n_targets:
                    break
                ticket = add("Ticket", project)
                for _ in range(rng.choice((0, 1, 1, 2, 2, 3))):
                    if len(targets) < n_targets:
                        add("TicketNote", ticket)
                for _ in range(rng.choice((0, 0, 1, 1, 2))):
                    if len(targets) < n_targets:
                        add("TimeEntry", ticket)

        weights = [rng.uniform(0.5, 1.5) for _ in targets]
        placed = rng.choices(range(len(targets)), weights, k=n_rows)
        per_target = [0] * len(targets)
        for t in placed:
            per_target[t] += 1

        rows: list[tuple] = []
        for t, count in zip(targets, per_target):
            kind, tid, chain, created = t
            remaining = count
            singles: list[tuple] = []
            while remaining > 0:
                r = rng.random()
                when = min(END, created + dt.timedelta(seconds=rng.expovariate(1 / (30 * 86400))))
                if r < 0.04 and remaining >= 2:
                    k = min(remaining, rng.randint(2, 4))
                    rows.extend(self.versions(account, kind, tid, chain, when, k, users))
                    remaining -= k
                elif r < 0.05 and singles and kind in ("Ticket", "TicketNote", "TimeEntry"):
                    parent = rng.choice(singles)
                    p_when = parent[STAGING_COLUMNS.index("created_at")]
                    rows.append(
                        self.row(
                            account,
                            "Attachment",
                            str(parent[0]),
                            [f"Attachment:{parent[0]}", *chain],
                            max(when, p_when + dt.timedelta(seconds=30)),
                            users,
                            parent_attachment_id=parent[0],
                        )
                    )
                    remaining -= 1
                else:
                    row = self.row(account, kind, tid, chain, when, users, may_cancel=True)
                    rows.append(row)
                    if row[STAGING_COLUMNS.index("storage_key")] is not None:
                        singles.append(row)
                    remaining -= 1
        if rng.random() < 0.05:  # an upload waiting for a record to link it
            when = END - dt.timedelta(seconds=rng.random() * 3600)
            rows.append(self.row(account, None, None, [], when, users, parent_type="Note", field="attachments"))
        return target_rows, rows

    def versions(self, account, kind, tid, chain, when, k, users) -> list[tuple]:
        out: list[tuple] = []
        root = None
        previous = None
        base = self.file_kind()
        stem = f"{self.rng.choice(WORDS)}-{self.rng.choice(WORDS)}"
        for v in range(1, k + 1):
            row = self.row(
                account,
                kind,
                tid,
                chain,
                when,
                users,
                version=v,
                version_root=root,
                version_of=previous,
                is_latest=v == k,
                file_kind=base,
                stem=stem,
            )
            out.append(row)
            root = root or row[0]
            previous = row[0]
            when = min(END, when + dt.timedelta(seconds=self.rng.expovariate(1 / (5 * 86400))))
        return out

    def file_kind(self):
        return self.rng.choices(KINDS, KIND_WEIGHTS)[0]

    def row(
        self,
        account,
        ttype,
        tid,
        chain,
        when,
        users,
        *,
        version=1,
        version_root=None,
        parent_attachment_id=None,
        version_of=None,
        is_latest=True,
        may_cancel=False,
        parent_type=None,
        field=None,
        file_kind=None,
        stem=None,
    ) -> tuple:
        rng = self.rng
        ident = self.uuid7(when)
        attachment_type = "FILE_ATTACHMENT"
        if file_kind is None and rng.random() < 0.08:
            attachment_type = rng.choices([t for t, _ in LINK_TYPES], [w for _, w in LINK_TYPES])[0]
        name = filename = content_type = size = sha256 = storage_key = url = width = height = variants = None
        if attachment_type == "FILE_ATTACHMENT":
            _, ext, content_type, median = file_kind or self.file_kind()
            if stem is None:
                if content_type.startswith("image/") and rng.random() < 0.5:
                    clock = f"{rng.randint(8, 19)}.{rng.randint(10, 59)}.{rng.randint(10, 59)}"
                    stem = (
                        f"IMG_{rng.randint(1000, 9999)}"
                        if ext in ("jpg", "heic")
                        else f"Screenshot {when:%Y-%m-%d} at {clock}"
                    )
                else:
                    stem = f"{rng.choice(WORDS)}-{rng.choice(WORDS)}-{when:%Y-%m}"
            filename = f"{stem}{'-v' + str(version) if version > 1 else ''}.{ext}"
            name = filename if rng.random() < 0.8 else f"{stem.replace('-', ' ').title()}"
            size = max(64, int(rng.lognormvariate(math.log(median), 0.9)))
            sha256 = rng.randbytes(32)
            storage_key = f"objects/{account}/{ident}/original"
            if content_type.startswith("image/") and ext != "gif":
                width, height = rng.choice(IMAGE_SIZES)
                variants = {
                    "thumbnail": {
                        "key": f"objects/{account}/{ident}/thumbnail",
                        "size": rng.randint(1500, 3500),
                        "width": 72,
                        "height": 48,
                    },
                    "small": {
                        "key": f"objects/{account}/{ident}/small",
                        "size": rng.randint(4000, 9000),
                        "width": 161,
                        "height": 107,
                    },
                }
        else:
            name = f"{rng.choice(WORDS).title()} {rng.choice(('doc', 'folder', 'board', 'sheet', 'link'))}"
            url = f"https://docs.example.com/{attachment_type.lower()}/{rng.getrandbits(64):016x}"
        canceled_at = None
        if may_cancel and rng.random() < 0.04:
            canceled_at = min(END, when + dt.timedelta(seconds=rng.expovariate(1 / (20 * 86400))))
        updated_at = canceled_at or (
            when if rng.random() < 0.9 else min(END, when + dt.timedelta(seconds=rng.random() * 30 * 86400))
        )
        r = rng.random()
        creator = (
            ("User", f"user-{rng.randint(1, users)}")
            if r < 0.85
            else ("Application", f"app-{rng.randint(1, 3)}")
            if r < 0.95
            else ("Contact", f"contact-{rng.randint(1, users)}")
            if r < 0.98
            else ("Resource", f"res-{rng.randint(1, 9)}")
        )
        return (
            ident,
            account,
            ttype,
            tid,
            field if field is not None else ("attachments" if rng.random() < 0.1 else None),
            parent_type,
            parent_attachment_id,
            version_of,
            version,
            version_root,
            is_latest,
            chain,
            attachment_type,
            name,
            filename,
            content_type,
            size,
            sha256,
            storage_key,
            url,
            width,
            height,
            variants,
            0 if rng.random() < 0.7 else rng.randint(1, 20),
            rng.random() < 0.95,
            rng.choices((None, "approved", "pending", "required"), (80, 10, 6, 4))[0],
            rng.choices(("api", "task_panel", "rework", "feedback"), (55, 30, 8, 7))[0],
            "all" if rng.random() < 0.9 else "internal",
            f"sess-{rng.getrandbits(48):012x}" if rng.random() < 0.03 else None,
            creator[0],
            creator[1],
            f"res-{rng.randint(1, 9)}" if rng.random() < 0.02 else None,
            when,
            updated_at,
            canceled_at,
        )


# --------------------------------------------------------------------------------------------- loading


async def loaded_tag(conn) -> str | None:
    if not await conn.fetchval("SELECT to_regclass('bench_meta') IS NOT NULL"):
        return None
    return await conn.fetchval("SELECT value FROM bench_meta WHERE key = 'loaded'")


async def _secondary_indexes(conn, table: str) -> list[str]:
    return [
        r["indexname"]
        for r in await conn.fetch(
            "SELECT i.indexname FROM pg_indexes i WHERE i.tablename = $1 AND i.schemaname = current_schema() "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
            table,
        )
    ]


async def load(url: str, p: Params, *, force: bool = False) -> None:
    await db.migrate(url)
    conn = await asyncpg.connect(url)
    # COPY is binary: jsonb's binary form is a version byte, then the text.
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=lambda v: b"\x01" + orjson.dumps(v),
        decoder=lambda b: orjson.loads(b[1:]),
        format="binary",
    )
    try:
        tag = await loaded_tag(conn)
        if tag == p.tag() and not force:
            print(f"reusing loaded data ({tag})", flush=True)
            return
        started = time.monotonic()
        print(f"loading {p.tag()}", flush=True)
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_meta (key text PRIMARY KEY, value text NOT NULL)")
        await conn.execute("DELETE FROM bench_meta")
        await conn.execute("TRUNCATE attachments, targets, outbox, upload_sessions RESTART IDENTITY")
        for table in ("attachments", "targets"):
            for index in await _secondary_indexes(conn, table):
                await conn.execute(f'DROP INDEX "{index}"')
        await conn.execute("DROP TABLE IF EXISTS bench_staging")
        await conn.execute(
            f"CREATE UNLOGGED TABLE bench_staging AS SELECT {', '.join(STAGING_COLUMNS)} FROM attachments WITH NO DATA"
        )

        gen = Generator(p)
        sizes = account_sizes(p)
        batch: list[tuple] = []
        target_batch: list[tuple] = []
        written = 0
        for index, n in enumerate(sizes):
            target_rows, rows = gen.account(index, n)
            batch.extend(rows)
            target_batch.extend(target_rows)
            if len(batch) >= 50_000 or index == len(sizes) - 1:
                await conn.copy_records_to_table("bench_staging", records=batch, columns=STAGING_COLUMNS)
                await conn.copy_records_to_table("targets", records=target_batch, columns=TARGET_COLUMNS)
                written += len(batch)
                batch, target_batch = [], []
                print(f"  {written:>9,} rows  {time.monotonic() - started:6.0f} s", flush=True)

        print("writing attachments in created_at order", flush=True)
        await conn.execute("SET maintenance_work_mem = '512MB'")
        await conn.execute("SET work_mem = '256MB'")
        # The counters are rebuilt in one pass below rather than row by row.
        await conn.execute("ALTER TABLE attachments DISABLE TRIGGER attachments_count_insert_delete")
        try:
            await conn.execute(
                f"INSERT INTO attachments ({', '.join(STAGING_COLUMNS)}) "
                f"SELECT {', '.join(STAGING_COLUMNS)} FROM bench_staging ORDER BY created_at, id"
            )
        finally:
            await conn.execute("ALTER TABLE attachments ENABLE TRIGGER attachments_count_insert_delete")
        await conn.execute("DROP TABLE bench_staging")
        await conn.execute("TRUNCATE attachment_counts, account_attachment_counts")
        await conn.execute(
            "INSERT INTO attachment_counts (account_id, target_type, target_id, live, live_available) "
            "SELECT account_id, target_type, target_id, count(*), count(*) FILTER (WHERE available) "
            "FROM attachments WHERE canceled_at IS NULL AND is_latest GROUP BY 1, 2, 3"
        )
        await conn.execute(
            "INSERT INTO account_attachment_counts (account_id, live, live_available) "
            "SELECT account_id, sum(live), sum(live_available) FROM attachment_counts GROUP BY 1"
        )
        print(f"building indexes (schema.sql)  {time.monotonic() - started:6.0f} s", flush=True)
        await conn.execute("SET max_parallel_maintenance_workers = 2")
        await conn.execute(SCHEMA_PATH.read_text())
        print(f"VACUUM ANALYZE  {time.monotonic() - started:6.0f} s", flush=True)
        for table in ("attachments", "targets", "attachment_counts", "account_attachment_counts"):
            await conn.execute(f"VACUUM (ANALYZE) {table}")
        await conn.execute(
            "INSERT INTO bench_meta VALUES ('loaded', $1), ('seconds', $2)",
            p.tag(),
            f"{time.monotonic() - started:.0f}",
        )
        print(f"loaded in {time.monotonic() - started:.0f} s", flush=True)
    finally:
        await conn.close()


async def summary(url: str) -> dict:
    conn = await asyncpg.connect(url)
    try:
        return {
            "attachments": await conn.fetchval("SELECT count(*) FROM attachments"),
            "live": await conn.fetchval("SELECT count(*) FROM attachments WHERE canceled_at IS NULL AND is_latest"),
            "canceled": await conn.fetchval("SELECT count(*) FROM attachments WHERE canceled_at IS NOT NULL"),
            "old_versions": await conn.fetchval("SELECT count(*) FROM attachments WHERE NOT is_latest"),
            "nested": await conn.fetchval("SELECT count(*) FROM attachments WHERE target_type = 'Attachment'"),
            "accounts": await conn.fetchval("SELECT count(*) FROM account_attachment_counts"),
            "targets": await conn.fetchval("SELECT count(*) FROM targets"),
            "largest_account": dict(
                await conn.fetchrow("SELECT account_id, live FROM account_attachment_counts ORDER BY live DESC LIMIT 1")
            ),
            "table_mb": await conn.fetchval("SELECT pg_table_size('attachments') / 1048576"),
            "indexes_mb": await conn.fetchval("SELECT pg_indexes_size('attachments') / 1048576"),
            "server": await conn.fetchval("SHOW server_version"),
        }
    finally:
        await conn.close()


def params_from(args: argparse.Namespace) -> Params:
    return Params(
        rows=args.rows,
        accounts=args.accounts,
        largest=args.largest,
        per_target=args.per_target,
        seed=args.seed,
        per_account_ids=args.per_account_ids,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Params()
    parser.add_argument("--rows", type=int, default=d.rows)
    parser.add_argument("--accounts", type=int, default=d.accounts)
    parser.add_argument("--largest", type=int, default=d.largest)
    parser.add_argument("--per-target", type=int, default=d.per_target)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument(
        "--per-account-ids",
        action="store_true",
        help="number targets per account, so 'Ticket:1' exists in every account",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--force", action="store_true", help="load again even if the same data is there")
    parser.add_argument("--keep-running", action="store_true", help="leave the embedded server running")
    args = parser.parse_args()
    url, server = bench_database_url()
    try:
        asyncio.run(load(url, params_from(args), force=args.force))
        print(orjson.dumps(asyncio.run(summary(url)), option=orjson.OPT_INDENT_2).decode())
        if args.keep_running:
            print(f"ATTACHD_BENCH_DATABASE_URL={url}")
    finally:
        if server is not None and not args.keep_running:
            server.stop()


if __name__ == "__main__":
    main()
