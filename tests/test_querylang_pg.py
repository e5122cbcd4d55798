"""The compiled filter, run by real Postgres, agrees with a plain-Python reading of the same filter.

Hypothesis drives an ``async def`` test directly: pytest-asyncio runs each example's coroutine on
the test's event loop, so the ``db`` pool is usable inside it. Every example writes its rows under a
fresh account inside a transaction it rolls back, which is why sharing one function-scoped fixture
across examples is safe. ``derandomize`` keeps the run the same on every machine.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import operator
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.core.fields import FIELDS, PICKLISTS
from services.core.querylang import compile_filter
from services.core.sqlparams import Params

# Small alphabets so that values collide, patterns match, and LIKE metacharacters turn up often.
# Letters stay ASCII: how ILIKE folds other letters depends on the server's locale.
TEXT = st.text(alphabet="aAb%_\\€", max_size=4)
ANCESTORS = ["Ticket:1", "Ticket:2", "Project:7", "Task:1"]
PARENTS = [uuid.UUID(int=n) for n in (1, 2)]
BASE = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
TIMES = [BASE + dt.timedelta(seconds=s, microseconds=us) for s in (-3600, 0, 1) for us in (0, 1)]
OFFSETS = [dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(dt.timedelta(hours=-8))]


def picklist(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from([v.value for v in PICKLISTS[name]])


ROW = st.fixed_dictionaries(
    {
        "id": st.uuids(),
        "name": TEXT,
        "filename": st.none() | TEXT,
        "content_type": st.none() | st.sampled_from(["image/png", "IMAGE/JPEG", "text/plain", "application/pdf"]),
        "target_type": st.none() | st.sampled_from(["Ticket", "Task", "ticket"]),
        "target_id": st.none() | TEXT,
        "field": st.none() | TEXT,
        "parent_type": st.none() | TEXT,
        "parent_attachment_id": st.none() | st.sampled_from(PARENTS),
        "version": st.integers(1, 3),
        "ancestors": st.lists(st.sampled_from(ANCESTORS), unique=True, max_size=3),
        "attachment_type": picklist("attachment_type"),
        "size": st.none() | st.integers(-1, 3) | st.integers(-(2**63), 2**63 - 1),
        "width": st.none() | st.integers(0, 3) | st.integers(-(2**31), 2**31 - 1),
        "height": st.none() | st.integers(0, 3),
        "display_order": st.integers(-2, 2),
        "available": st.booleans(),
        "status": st.none() | picklist("status"),
        "created_from": picklist("created_from"),
        "publish": picklist("publish"),
        "url": st.none() | TEXT,
        "session_token": st.none() | TEXT,
        "created_by_type": picklist("created_by_type"),
        "created_by_id": st.none() | TEXT,
        "impersonator_id": st.none() | TEXT,
        "created_at": st.sampled_from(TIMES),
        "updated_at": st.sampled_from(TIMES),
        "canceled_at": st.none() | st.sampled_from(TIMES),
    }
)

# The operators each kind of field takes, written out independently of the compiler.
BASIC = ["eq", "noteq", "in", "notIn", "exist", "notExist"]
ORDERING = ["gt", "gte", "lt", "lte"]
PATTERN_OPS = ["beginsWith", "endsWith", "contains"]
OPS_BY_TYPE = {
    "integer": BASIC + ORDERING,
    "uuid": BASIC + ORDERING,
    "datetime": BASIC + ORDERING,
    "text": BASIC + ORDERING + PATTERN_OPS,
    "boolean": BASIC,
    "picklist": BASIC,
}
QUERYABLE = sorted(name for name, spec in FIELDS.items() if spec.queryable)
TEXT_FIELDS = sorted(name for name in QUERYABLE if FIELDS[name].type == "text" and name != "ancestor")


def as_json(value: Any) -> Any:
    """A Python value as a client would write it in a filter."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def slices(text: str) -> st.SearchStrategy[str]:
    bounds = st.integers(0, len(text))
    return st.tuples(bounds, bounds).map(lambda ij: text[min(ij) : max(ij)])


def field_values(name: str, rows: list[dict[str, Any]]) -> st.SearchStrategy[Any]:
    """Filter values for a field: mostly ones the rows hold (so conditions match), some fresh ones."""
    kind = FIELDS[name].type
    fresh = {
        "integer": st.integers(-1, 3) | st.integers(-(2**63), 2**63 - 1),
        "uuid": st.uuids() | st.sampled_from(PARENTS),
        "datetime": st.sampled_from(TIMES),
        "text": TEXT,
        "boolean": st.booleans(),
        "picklist": picklist(name) if kind == "picklist" else st.nothing(),
    }[kind]
    held = [row[name] for row in rows if row[name] is not None]
    values = st.sampled_from(held) | fresh if held else fresh
    if kind == "text":
        values = values | values.map(str.swapcase) | values.flatmap(slices)
    if kind == "datetime":  # the same instant, written in another offset
        return st.tuples(values, st.sampled_from(OFFSETS)).map(lambda p: as_json(p[0].astimezone(p[1])))
    return values.map(as_json)


@st.composite
def condition(draw: st.DrawFn, rows: list[dict[str, Any]]) -> dict[str, Any]:
    # Text fields come up more often: they take the most operators, and the escaping ones.
    name = draw(st.sampled_from(QUERYABLE) | st.sampled_from(TEXT_FIELDS))
    if name == "ancestor":
        op = draw(st.sampled_from(["eq", "in"]))
        one = st.sampled_from(ANCESTORS)
    else:
        op = draw(st.sampled_from(OPS_BY_TYPE[FIELDS[name].type]))
        one = field_values(name, rows)
        if op in PATTERN_OPS:  # a bare metacharacter is where unescaped LIKE goes most wrong
            one = one | st.sampled_from(["%", "_", "\\"])
    if op in ("exist", "notExist"):
        return {"field": name, "op": op}
    value = draw(st.lists(one, min_size=1, max_size=3)) if op in ("in", "notIn") else draw(one)
    return {"field": name, "op": op, "value": value}


def filters(rows: list[dict[str, Any]]) -> st.SearchStrategy[list[dict[str, Any]]]:
    tree = st.recursive(
        condition(rows),
        lambda items: st.fixed_dictionaries(
            {"op": st.sampled_from(["and", "or"]), "items": st.lists(items, min_size=1, max_size=3)}
        ),
        max_leaves=6,
    )
    return st.lists(tree, min_size=1, max_size=2)


# -- the reference: what each condition means, read straight off the row --------------------------

COMPARE = {"eq": operator.eq, "gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}
PATTERNS = {"beginsWith": str.startswith, "endsWith": str.endswith, "contains": str.__contains__}


def parse(name: str, value: Any) -> Any:
    kind = FIELDS[name].type
    if kind == "uuid":
        return uuid.UUID(value)
    if kind == "datetime":
        return dt.datetime.fromisoformat(value)
    return value


def matches(node: dict[str, Any], row: dict[str, Any]) -> bool:
    if "items" in node:
        results = [matches(item, row) for item in node["items"]]
        return all(results) if node["op"] == "and" else any(results)
    name, op, value = node["field"], node["op"], node.get("value")
    if name == "ancestor":
        return value in row["ancestors"] if op == "eq" else bool(set(value) & set(row["ancestors"]))
    actual = row[name]
    if op == "exist":
        return actual is not None
    if op == "notExist":
        return actual is None
    if op == "noteq":
        return actual is None or actual != parse(name, value)
    if op == "notIn":
        return actual is None or actual not in [parse(name, v) for v in value]
    if actual is None:
        return False
    if op == "in":
        return actual in [parse(name, v) for v in value]
    if op in PATTERNS:
        return PATTERNS[op](actual.lower(), value.lower())
    return COMPARE[op](actual, parse(name, value))


# -- the tests ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def scratch_account(db: asyncpg.Pool) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    """A connection and a fresh account, inside a transaction that is rolled back afterwards."""
    async with db.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            yield conn, f"ql-{uuid.uuid4().hex}"
        finally:
            await transaction.rollback()


async def insert(conn: asyncpg.Connection, account: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stored = []
    for row in rows:
        columns = ", ".join(row)
        placeholders = ", ".join(f"${i}" for i in range(2, len(row) + 2))
        record = await conn.fetchrow(
            f"INSERT INTO attachments (account_id, {columns}) VALUES ($1, {placeholders}) RETURNING *",
            account,
            *row.values(),
        )
        stored.append(dict(record))
    return stored


async def matching_ids(conn: asyncpg.Connection, account: str, nodes: list[dict[str, Any]]) -> set[uuid.UUID]:
    compiled = compile_filter(nodes, Params([account]))
    records = await conn.fetch(
        f"SELECT id FROM attachments WHERE account_id = $1 AND ({compiled.sql})", account, *compiled.params
    )
    return {r["id"] for r in records}


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=st.lists(ROW, min_size=1, max_size=8, unique_by=lambda row: row["id"]), data=st.data())
async def test_postgres_agrees_with_the_reference(
    db: asyncpg.Pool, rows: list[dict[str, Any]], data: st.DataObject
) -> None:
    async with scratch_account(db) as (conn, account):
        stored = await insert(conn, account, rows)
        # Drawn after the insert so that filters can name the seq values Postgres chose.
        nodes = data.draw(filters(stored), label="filter")
        expected = {row["id"] for row in stored if all(matches(node, row) for node in nodes)}
        assert await matching_ids(conn, account, nodes) == expected


async def test_patterns_match_metacharacters_literally(db: asyncpg.Pool) -> None:
    names = ["100%", "100 percent", "a_b", "axb", "C:\\dir", "C:dir", "Report.PDF"]
    async with scratch_account(db) as (conn, account):
        stored = await insert(conn, account, [{"id": uuid.uuid4(), "name": n} for n in names])
        by_id = {row["id"]: row["name"] for row in stored}

        async def names_where(op: str, value: str) -> set[str]:
            ids = await matching_ids(conn, account, [{"field": "name", "op": op, "value": value}])
            return {by_id[i] for i in ids}

        assert await names_where("contains", "%") == {"100%"}
        assert await names_where("contains", "_") == {"a_b"}
        assert await names_where("beginsWith", "c:\\") == {"C:\\dir"}
        assert await names_where("endsWith", ".pdf") == {"Report.PDF"}
        assert await names_where("eq", "x'; DROP TABLE attachments; --") == set()
        assert await conn.fetchval("SELECT count(*) FROM attachments WHERE account_id = $1", account) == 7
