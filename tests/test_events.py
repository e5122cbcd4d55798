"""Events: outbox -> relay -> the attachd:events stream, in order, at least once; upload sessions."""

from __future__ import annotations

import asyncio
import base64
import time
import typing
from urllib.parse import urlsplit

import msgspec
import orjson
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from services.core import contract, repository
from workers.context import WorkerContext
from workers.events import STREAM, close_idle_sessions, relay_outbox
from workers.targets import purge_unlinked


async def upload(svc, filename: str, **fields) -> dict:
    resp = await svc.upload_json(
        {
            "target_type": "Task",
            "target_id": "1",
            "filename": filename,
            "data": base64.b64encode(f"text of {filename}".encode()).decode(),
            **fields,
        }
    )
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def stream(redis, account: str) -> list[dict]:
    """The account's entries in the stream, as their ``event`` JSON, in stream order."""
    events = []
    for _, fields in await redis.xrange(STREAM):
        if fields[b"account_id"].decode() == account:
            event = orjson.loads(fields[b"event"])
            assert (int(fields[b"seq"]), fields[b"type"].decode()) == (event["seq"], event["type"])
            events.append(event)
    return events


async def published(redis, account: str, count: int) -> list[dict]:
    """Wait for the worker's relay to put ``count`` of the account's events on the stream."""
    deadline = time.monotonic() + 10
    while len(events := await stream(redis, account)) < count:
        assert time.monotonic() < deadline, f"{len(events)} of {count} events reached the stream"
        await asyncio.sleep(0.05)
    return events


async def drain(pool, redis) -> None:
    """Publish what earlier tests left in the shared outbox, so the test's own events come first."""
    while await relay_outbox(pool, redis):
        pass


def dedupe(events: list[dict]) -> list[int]:
    """What a consumer does: per account, skip any seq at or below the last one it handled."""
    seen, last = [], 0
    for event in events:
        if event["seq"] > last:
            seen.append(event["seq"])
            last = event["seq"]
    return seen


@pytest.fixture
async def redis(redis_url):
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_changes_reach_the_stream_in_order_with_their_rows(service, redis):
    first, second = await upload(service, "a.txt"), await upload(service, "b.txt")
    resp = await service.client.patch(
        f"/v1/attachments/{first['id']}", headers=service.auth(), json={"name": "Renamed"}
    )
    assert resp.status == 200, await resp.text()
    resp = await service.client.delete(f"/v1/attachments/{second['id']}", headers=service.auth())
    assert resp.status == 204

    events = await published(redis, service.account, 4)
    assert [(e["type"], e["attachment_id"]) for e in events] == [
        ("attachment.created", first["id"]),
        ("attachment.created", second["id"]),
        ("attachment.updated", first["id"]),
        ("attachment.canceled", second["id"]),
    ]
    assert [e["seq"] for e in events] == [r["seq"] for r in await service.events()]
    created, _, updated, canceled = events
    assert created["account_id"] == service.account and created["occurred_at"].endswith("Z")
    assert created["attachment"]["filename"] == "a.txt" and created["attachment"]["size"] == len("text of a.txt")
    assert updated["changes"] == {"name": "Renamed"} and updated["attachment"]["name"] == "Renamed"
    assert canceled["attachment"]["canceled_at"] is not None
    await asyncio.sleep(0.5)  # the relay marks what it sent just after sending it, then runs again
    assert len(await stream(redis, service.account)) == 4, "published once, not on every relay run"
    assert all(r["published_at"] is not None for r in await service.events())


async def test_a_session_is_announced_by_one_event_when_closed(service, redis):
    svc = service
    in_session = [await upload(svc, f"{n}.txt", session_token="batch-1") for n in ("a", "b")]
    loose = await upload(svc, "c.txt")
    assert [(e["event_type"], str(e["attachment_id"])) for e in await svc.events()] == [
        ("attachment.created", loose["id"])
    ]
    [session] = await svc.pool.fetch("SELECT * FROM upload_sessions WHERE account_id = $1", svc.account)
    assert session["session_token"] == "batch-1" and session["closed_at"] is None

    resp = await svc.client.post("/v1/sessions/batch-1/close", headers=svc.auth())
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["session_token"] == "batch-1" and body["closed_at"]
    assert [r["id"] for r in body["attachments"]] == [r["id"] for r in in_session]
    assert body["attachments"][0]["file"]["original"].startswith("http")

    again = await svc.client.post("/v1/sessions/batch-1/close", headers=svc.auth())
    assert again.status == 200
    assert (await again.json())["closed_at"] == body["closed_at"]

    rows = await svc.events()
    assert [r["event_type"] for r in rows] == ["attachment.created", "upload_session.closed"]
    events = await published(redis, svc.account, 2)
    closed = events[1]
    assert closed["type"] == "upload_session.closed" and closed["attachment_id"] is None
    assert closed["attachment_ids"] == [r["id"] for r in in_session]
    assert [a["filename"] for a in closed["attachments"]] == ["a.txt", "b.txt"]
    assert closed["session"]["session_token"] == "batch-1" and closed["session"]["reason"] == "request"


async def test_closing_an_unknown_or_foreign_session_is_a_404(service):
    await upload(service, "a.txt", session_token="mine")
    for token, auth in (
        ("nope", service.auth()),
        ("mine", service.auth(service.other_account())),
        ("x" * 300, service.auth()),
    ):
        resp = await service.client.post(f"/v1/sessions/{token}/close", headers=auth)
        assert resp.status == 404
        error = (await resp.json())["error"]
        assert error["code"] == "not_found" and "session" in error["message"]
    resp = await service.client.post("/v1/sessions/mine/close", headers=service.auth(scope="attachments:read"))
    assert resp.status == 403
    assert [r["event_type"] for r in await service.events()] == []


async def test_idle_sessions_are_closed_with_their_event(service):
    svc = service
    idle = await upload(svc, "idle.txt", session_token="idle-1")
    await upload(svc, "busy.txt", session_token="busy-1")
    await svc.pool.execute(
        "UPDATE upload_sessions SET last_upload_at = now() - interval '1 hour' "
        "WHERE account_id = $1 AND session_token = 'idle-1'",
        svc.account,
    )

    assert await close_idle_sessions(svc.pool, 600) >= 1
    await close_idle_sessions(svc.pool, 600)  # a second pass finds it closed: no second event
    [event] = await svc.events()
    assert event["event_type"] == "upload_session.closed"
    assert event["payload"]["attachment_ids"] == [idle["id"]]
    assert event["payload"]["session"]["reason"] == "idle"
    open_now = await svc.pool.fetch(
        "SELECT session_token FROM upload_sessions WHERE account_id = $1 AND closed_at IS NULL", svc.account
    )
    assert [r["session_token"] for r in open_now] == ["busy-1"]

    # An upload to a closed session reopens it; closing it again announces it again.
    await upload(svc, "late.txt", session_token="idle-1")
    resp = await svc.client.post("/v1/sessions/idle-1/close", headers=svc.auth())
    assert resp.status == 200
    assert [e["event_type"] for e in await svc.events()] == ["upload_session.closed"] * 2


class CutRedis:
    """A TCP proxy to Redis that passes the first ``keep`` XADD commands, then drops the connection in the
    middle of the next one and refuses any new one: Redis has taken part of the batch, the client has not
    heard back."""

    XADD = b"$4\r\nXADD\r\n"

    def __init__(self, redis_url: str, keep: int) -> None:
        url = urlsplit(redis_url)
        self.target = (url.hostname, url.port or 6379)
        self.keep = keep
        self.cut = False

    async def __aenter__(self) -> aioredis.Redis:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.client = aioredis.Redis(port=self.server.sockets[0].getsockname()[1])
        return self.client

    async def __aexit__(self, *exc) -> None:
        await self.client.aclose()
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        replies = asyncio.create_task(self._copy(up_reader, writer))
        seen, sent = b"", 0
        while data := await reader.read(65536):
            seen += data
            starts = [i for i in range(len(seen)) if seen.startswith(self.XADD, i)]
            end = len(seen) if len(starts) <= self.keep else max(starts[self.keep], sent)
            up_writer.write(seen[sent:end])
            await up_writer.drain()
            sent = end
            if end < len(seen):
                self.cut = True
                break
        up_writer.close()
        replies.cancel()
        writer.close()

    @staticmethod
    async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)


async def test_a_crash_between_commit_and_publish_loses_no_event(make_service, redis):
    # This worker does not relay: the test plays the relay, and crashes it.
    async with make_service(relay_interval_s=0) as svc:
        await drain(svc.pool, redis)
        records = [await upload(svc, f"{n}.txt") for n in "abc"]
        resp = await svc.client.patch(f"/v1/attachments/{records[0]['id']}", headers=svc.auth(), json={"name": "x"})
        assert resp.status == 200
        assert (await svc.client.delete(f"/v1/attachments/{records[1]['id']}", headers=svc.auth())).status == 204
        committed = [r["seq"] for r in await svc.events()]
        assert len(committed) == 5 and await stream(redis, svc.account) == []

        async with CutRedis(svc.settings.redis_url, keep=2) as cut:
            with pytest.raises(RedisConnectionError):
                await relay_outbox(svc.pool, cut)
        deadline = time.monotonic() + 5
        while len(await stream(redis, svc.account)) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert [e["seq"] for e in await stream(redis, svc.account)] == committed[:2]  # sent, never marked
        assert all(r["published_at"] is None for r in await svc.events())

        await drain(svc.pool, redis)  # a restarted worker's relay
        events = await stream(redis, svc.account)
        assert [e["seq"] for e in events] == committed[:2] + committed  # at least once: two are there twice
        assert dedupe(events) == committed
        assert all(r["published_at"] is not None for r in await svc.events())


async def test_concurrent_relays_publish_each_event_once_in_order(make_service, redis):
    async with make_service(relay_interval_s=0) as svc:
        await drain(svc.pool, redis)
        for i in range(60):
            async with svc.pool.acquire() as conn, conn.transaction():
                await repository.write_event(conn, svc.account, "test.tick", None, f"tick-{i}", {"i": i})
        committed = [r["seq"] for r in await svc.events()]

        async def relay_until_done() -> None:
            while await svc.pool.fetchval(
                "SELECT count(*) FROM outbox WHERE account_id = $1 AND published_at IS NULL", svc.account
            ):
                await relay_outbox(svc.pool, redis, batch=7)

        await asyncio.gather(*(relay_until_done() for _ in range(3)))
        events = await stream(redis, svc.account)
        assert [e["seq"] for e in events] == committed
        assert [e["i"] for e in events] == list(range(60))


async def test_an_accounts_events_commit_in_seq_order(make_service, redis):
    """The relay publishes in seq order; that is the order of commits only because a transaction that
    writes an event holds its account's event lock until it commits."""
    async with make_service(relay_interval_s=0) as svc:
        await drain(svc.pool, redis)

        async def write(account: str, event_type: str) -> None:
            async with svc.pool.acquire() as conn, conn.transaction():
                await repository.write_event(conn, account, event_type, None, event_type, {})

        async with svc.pool.acquire() as conn:
            first = conn.transaction()
            await first.start()
            await repository.write_event(conn, svc.account, "test.first", None, "first", {})
            second = asyncio.create_task(write(svc.account, "test.second"))
            await asyncio.wait_for(write(svc.other_account(), "test.elsewhere"), 5)  # other accounts go on
            await asyncio.sleep(0.3)
            assert not second.done()
            await drain(svc.pool, redis)
            assert await stream(redis, svc.account) == []
            await first.commit()
        await second
        await drain(svc.pool, redis)
        events = await stream(redis, svc.account)
        assert [e["type"] for e in events] == ["test.first", "test.second"]
        assert events[0]["seq"] < events[1]["seq"]


async def test_every_event_on_the_stream_is_one_the_contract_describes(make_service, redis):
    """workers/contract.schema.json is generated from the Structs; every kind of event decodes into its Struct."""
    async with make_service(unlinked_ttl_s=0) as svc:
        auth = svc.auth()
        first = await upload(svc, "a.txt")
        await svc.client.patch(f"/v1/attachments/{first['id']}", headers=auth, json={"name": "A"})
        await svc.client.delete(f"/v1/attachments/{first['id']}", headers=auth)
        await upload(svc, "s.txt", session_token="s-1")
        assert (await svc.client.post("/v1/sessions/s-1/close", headers=auth)).status == 200
        for parent in ("1", "2"):  # placed, then moved
            body = {"parent": {"type": "Ticket", "id": parent}}
            assert (await svc.client.put("/v1/targets/TicketNote/9", json=body, headers=auth)).status == 200
        linked = await upload(svc, "n.txt", parent_type="Note", field="attachments", target_type=None, target_id=None)
        path = "/v1/targets/Note/n1/links/attachments"
        assert (await svc.client.put(path, json={"ids": [linked["id"]]}, headers=auth)).status == 200
        assert (await svc.client.put(path, json={"ids": []}, headers=auth)).status == 200
        await upload(svc, "u.txt", parent_type="Note", field="attachments", target_type=None, target_id=None)
        wctx = await WorkerContext.open(svc.settings)
        try:
            # the one unlinked and the one never linked (and any other test's: the purge is for every account)
            assert await purge_unlinked({"attachd": wctx}) >= 2
        finally:
            await wctx.close()

        events = await published(redis, svc.account, 11)
        decoded = [msgspec.json.decode(orjson.dumps(e), type=contract.AnyEvent, strict=True) for e in events]
        kinds = {type(d) for d in decoded}
        assert kinds == set(typing.get_args(contract.AnyEvent)), kinds
        assert [(d.seq, d.account_id) for d in decoded] == [(e["seq"], svc.account) for e in events]
