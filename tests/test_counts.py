"""Counts stay exact: GET /v1/attachments/count agrees with count(*) after every kind of write.

The counters (schema.sql ``attachment_counts``, ``account_attachment_counts``) are kept by a deferred
trigger; these tests change attachments every way the API can and compare the API's count, the
counters and a plain ``count(*)`` each time.
"""

from __future__ import annotations

import asyncio
import base64
import uuid

from services.core import db as dbmod
from services.core import repository
from workers.context import WorkerContext
from workers.targets import purge_unlinked

# (query string, the filter it means) for a target and the account; None: the caller's target.
FILTERS = [
    ("", {}),
    ("available=true", {"available": True}),
    ("available=false", {"available": False}),
    ("target_type=Ticket", {"target_type": "Ticket"}),
    ("target_type=Ticket&target_id=1", {"target_type": "Ticket", "target_id": "1"}),
    (
        "target_type=Ticket&target_id=1&available=true",
        {"target_type": "Ticket", "target_id": "1", "available": True},
    ),
    (
        "target_type=Ticket&target_id=1&available=false",
        {"target_type": "Ticket", "target_id": "1", "available": False},
    ),
    ("target_type=Ticket&available=false", {"target_type": "Ticket", "available": False}),
    ("target_type=Ticket&target_id=2", {"target_type": "Ticket", "target_id": "2"}),
    ("target_type=Note&target_id=n1", {"target_type": "Note", "target_id": "n1"}),
    # The counters cannot answer these: count(*) does.
    ("include_canceled=true", {"include_canceled": True}),
    ("versions=all", {"all_versions": True}),
    (
        "target_type=Ticket&target_id=1&descendants=true",
        {"target_type": "Ticket", "target_id": "1", "ancestor": "Ticket:1"},
    ),
    (
        "target_type=Project&target_id=7&descendants=true",
        {"target_type": "Project", "target_id": "7", "ancestor": "Project:7"},
    ),
    ("ancestor=Project:7", {"ancestor": "Project:7"}),
]


async def upload(svc, name: str, target_id: str | None = "1", target_type: str | None = "Ticket", **fields) -> dict:
    body = {
        "filename": name,
        "data": base64.b64encode(name.encode()).decode(),
        "target_type": target_type,
        "target_id": target_id,
        **fields,
    }
    resp = await svc.upload_json({k: v for k, v in body.items() if v is not None})
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def delete(svc, record: dict) -> None:
    resp = await svc.client.delete(f"/v1/attachments/{record['id']}", headers=svc.auth())
    assert resp.status == 204, await resp.text()


async def assert_exact(svc, expected: dict[str, int] | None = None) -> dict[str, int]:
    """Every filter's API count equals count(*); the counters equal a GROUP BY of the rows."""
    seen = {}
    for query, fields in FILTERS:
        resp = await svc.client.get(f"/v1/attachments/count?{query}", headers=svc.auth())
        assert resp.status == 200, await resp.text()
        got = (await resp.json())["count"]
        where = repository.list_where(repository.ListFilter(account_id=svc.account, **fields))
        truth = await svc.pool.fetchval(f"SELECT count(*) FROM attachments WHERE {where.sql()}", *where.params.values)
        assert got == truth, (query, got, truth)
        seen[query] = got
    rows = await svc.pool.fetch(
        "SELECT target_type, target_id, count(*) AS live, count(*) FILTER (WHERE available) AS available "
        "FROM attachments WHERE account_id = $1 AND canceled_at IS NULL AND is_latest GROUP BY 1, 2",
        svc.account,
    )
    counters = await svc.pool.fetch(
        "SELECT target_type, target_id, live, live_available AS available FROM attachment_counts "
        "WHERE account_id = $1 AND (live <> 0 OR live_available <> 0)",
        svc.account,
    )
    key = lambda r: (r["target_type"] or "", r["target_id"] or "")  # noqa: E731
    assert sorted(map(tuple, rows), key=str) == sorted(map(tuple, counters), key=str)
    total = await svc.pool.fetchrow(
        "SELECT live, live_available FROM account_attachment_counts WHERE account_id = $1", svc.account
    )
    totals = (total["live"], total["live_available"]) if total else (0, 0)
    assert totals == (sum(r["live"] for r in rows), sum(r["available"] for r in rows))
    assert all(r["live"] >= 0 and r["available"] >= 0 for r in counters), sorted(counters, key=key)
    for query, count in (expected or {}).items():
        assert seen[query] == count, (query, seen[query], count)
    return seen


async def test_counts_follow_uploads_cancels_and_changes(service):
    await assert_exact(service, {"": 0, "target_type=Ticket&target_id=1": 0})
    a = await upload(service, "a.txt")
    b = await upload(service, "b.txt", available=False)
    await upload(service, "c.txt", target_id="2")
    await assert_exact(
        service,
        {
            "": 3,
            "available=true": 2,
            "available=false": 1,
            "target_type=Ticket": 3,
            "target_type=Ticket&target_id=1": 2,
            "target_type=Ticket&target_id=1&available=true": 1,
            "target_type=Ticket&target_id=1&available=false": 1,
        },
    )
    await delete(service, a)
    await assert_exact(service, {"": 2, "target_type=Ticket&target_id=1": 1, "include_canceled=true": 3})
    # Changing `available` moves a row between the two counters; other changes move nothing.
    resp = await service.client.patch(
        f"/v1/attachments/{b['id']}", json={"available": True, "name": "B"}, headers=service.auth()
    )
    assert resp.status == 200, await resp.text()
    await assert_exact(
        service,
        {"available=true": 2, "available=false": 0, "target_type=Ticket&target_id=1&available=true": 1},
    )
    # Deleting twice counts once.
    assert (await service.client.delete(f"/v1/attachments/{a['id']}", headers=service.auth())).status == 404
    await assert_exact(service, {"": 2})


async def test_counts_follow_versions_and_nesting(service):
    v1 = await upload(service, "plan-v1.txt")
    v2 = await upload(service, "plan-v2.txt", version_of=v1["id"])
    v3 = await upload(service, "plan-v3.txt", version_of=v2["id"])
    await assert_exact(service, {"": 1, "target_type=Ticket&target_id=1": 1, "versions=all": 3})
    await delete(service, v3)  # v2 becomes the latest again
    await assert_exact(service, {"": 1, "target_type=Ticket&target_id=1": 1, "versions=all": 2})
    child = await upload(service, "sig.txt", target_type=None, target_id=None, parent_attachment_id=v2["id"])
    await assert_exact(
        service, {"": 2, "target_type=Ticket&target_id=1": 1, "target_type=Ticket&target_id=1&descendants=true": 2}
    )
    resp = await service.client.get(
        f"/v1/attachments/count?target_type=Attachment&target_id={v2['id']}", headers=service.auth()
    )
    assert await resp.json() == {"count": 1}
    await delete(service, child)
    await delete(service, v2)
    await delete(service, v1)
    await assert_exact(service, {"": 0, "versions=all": 0, "include_canceled=true": 4})


async def test_counts_follow_links_unlinks_and_the_purge(make_service):
    async with make_service(unlinked_ttl_s=0) as svc:
        ups = [
            await upload(svc, f"{n}.txt", target_type=None, target_id=None, parent_type="Note", field="attachments")
            for n in "abcd"
        ]
        await assert_exact(svc, {"": 4, "target_type=Note&target_id=n1": 0})
        path = "/v1/targets/Note/n1/links/attachments"
        resp = await svc.client.put(path, json={"ids": [ups[0]["id"], ups[1]["id"]]}, headers=svc.auth())
        assert resp.status == 200, await resp.text()
        await assert_exact(svc, {"": 4, "target_type=Note&target_id=n1": 2})
        # Setting the list again unlinks b (it waits for a record again) and links c.
        resp = await svc.client.put(path, json={"ids": [ups[0]["id"], ups[2]["id"]]}, headers=svc.auth())
        assert resp.status == 200, await resp.text()
        await assert_exact(svc, {"": 4, "target_type=Note&target_id=n1": 2})
        # b (unlinked) and d (never linked) are past the TTL: the purge deletes their rows (and any other
        # test's waiting uploads: the purge is for every account, and the TTL here is 0).
        wctx = await WorkerContext.open(svc.settings)
        try:
            assert await purge_unlinked({"attachd": wctx}) >= 2
        finally:
            await wctx.close()
        await assert_exact(svc, {"": 2, "target_type=Note&target_id=n1": 2})


async def test_moving_targets_keeps_counts_and_moves_descendants(service):
    put = service.client.put
    assert (
        await put("/v1/targets/Ticket/1", json={"parent": {"type": "Project", "id": "7"}}, headers=service.auth())
    ).status == 200
    await upload(service, "on-ticket.txt")
    await upload(service, "on-note.txt", target_type="TicketNote", target_id="9", parent={"type": "Ticket", "id": "1"})
    await upload(service, "on-2.txt", target_id="2")
    await assert_exact(
        service,
        {"target_type=Project&target_id=7&descendants=true": 2, "target_type=Ticket&target_id=1&descendants=true": 2},
    )
    assert (
        await put("/v1/targets/Ticket/2", json={"parent": {"type": "Project", "id": "7"}}, headers=service.auth())
    ).status == 200
    assert (
        await put("/v1/targets/TicketNote/9", json={"parent": {"type": "Ticket", "id": "2"}}, headers=service.auth())
    ).status == 200
    await assert_exact(
        service,
        {
            "": 3,
            "target_type=Ticket&target_id=1": 1,
            "target_type=Ticket&target_id=1&descendants=true": 1,
            "target_type=Project&target_id=7&descendants=true": 3,
        },
    )


async def test_a_refused_upload_counts_nothing(service):
    await upload(service, "keep.txt")
    resp = await service.upload_json(
        {
            "mode": "atomic",
            "attachments": [
                {"target_type": "Ticket", "target_id": "1", "filename": "ok.txt", "data": "b2s="},
                {"target_type": "Ticket", "target_id": "1", "filename": "bad.jpg", "data": "PGh0bWw+"},
            ],
        }
    )
    assert resp.status == 400
    await assert_exact(service, {"": 1, "target_type=Ticket&target_id=1": 1})


async def test_concurrent_writes_to_one_account_stay_exact(service):
    """Batches over several targets in opposite orders, and deletes, at once: no deadlock, no drift."""

    def batch(i: int) -> dict:
        targets = ["1", "2", "3"] if i % 2 else ["3", "2", "1"]
        return {
            "mode": "atomic",
            "attachments": [
                {
                    "target_type": "Ticket",
                    "target_id": t,
                    "filename": f"f{i}-{t}.txt",
                    "data": "eA==",
                    "available": bool(i % 3),
                }
                for t in targets
            ],
        }

    first = await asyncio.gather(*(service.upload_json(batch(i)) for i in range(8)))
    assert all(r.status == 201 for r in first)
    ids = [a["id"] for r in first for a in (await r.json())["attachments"]]
    results = await asyncio.gather(
        *(service.upload_json(batch(i)) for i in range(8, 16)),
        *(service.client.delete(f"/v1/attachments/{i}", headers=service.auth()) for i in ids[::2]),
    )
    assert all(r.status in (201, 204) for r in results)
    await assert_exact(service, {"": 48 - 12, "target_type=Ticket&target_id=1": 16 - 4})


async def test_a_rolled_back_transaction_changes_no_counter(service):
    await upload(service, "keep.txt")
    conn = await service.pool.acquire()
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute(
            "INSERT INTO attachments (id, account_id, target_type, target_id, name) "
            "VALUES ($1, $2, 'Ticket', '1', 'ghost')",
            uuid.uuid4(),
            service.account,
        )
        await conn.execute("UPDATE attachments SET canceled_at = now() WHERE account_id = $1", service.account)
        await tx.rollback()
    finally:
        await service.pool.release(conn)
    await assert_exact(service, {"": 1, "target_type=Ticket&target_id=1": 1})


async def test_migrating_a_database_without_counters_fills_them(service, pg_url):
    """An existing database gets its counters on the first `attachd migrate` that has them: one made by a
    schema.sql from before the counters and before the migrations, which 0001 adopts."""
    await upload(service, "before.txt")
    await upload(service, "gone.txt", target_id="2")
    async with service.pool.acquire() as conn:
        await conn.execute(f"DROP TABLE {dbmod.MIGRATIONS_TABLE}")
        for trigger in ("attachments_count_insert_delete", "attachments_count_update", "attachments_count_truncate"):
            await conn.execute(f"DROP TRIGGER {trigger} ON attachments")
        await conn.execute("DELETE FROM attachment_counts WHERE account_id = $1", service.account)
        await conn.execute(
            "UPDATE attachments SET canceled_at = now() WHERE account_id = $1 AND target_id = '2'", service.account
        )
        await conn.execute(
            "INSERT INTO attachments (id, account_id, target_type, target_id, name) "
            "VALUES ($1, $2, 'Ticket', '1', 'untracked')",
            uuid.uuid4(),
            service.account,
        )
    await dbmod.migrate(pg_url)
    await dbmod.migrate(pg_url)  # and applying it again changes nothing
    await assert_exact(service, {"": 2, "target_type=Ticket&target_id=1": 2, "target_type=Ticket&target_id=2": 0})
    await upload(service, "after.txt")
    await assert_exact(service, {"": 3})
