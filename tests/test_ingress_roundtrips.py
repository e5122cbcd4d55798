"""Redis round trips per create: counted on the ingress's own connection pool, one request at a time."""

from __future__ import annotations

import contextlib
import re
import uuid

import aiohttp
import pytest
from redis.asyncio.connection import AbstractConnection

from services.web.engines import REDIS

_COMMAND = re.compile(rb"\*\d+\r\n\$\d+\r\n([A-Za-z]+)\r\n")


@contextlib.contextmanager
def counting(monkeypatch, app):
    """Every batch the app's Redis pool sends (a command, a pipeline, a script call) is one round trip.

    Yields the list of round trips, each the list of command names it carried. The worker and the outcome
    listener have connections of their own, which are not counted.
    """
    pool = app[REDIS].connection_pool
    trips: list[list[str]] = []
    get_connection, send = pool.get_connection, AbstractConnection.send_packed_command

    async def marked(*args, **kwargs):
        connection = await get_connection(*args, **kwargs)
        connection._counted_by = trips
        return connection

    async def counted(self, command, check_health=True):
        if getattr(self, "_counted_by", None) is trips:
            packed = command if isinstance(command, (bytes, bytearray, memoryview)) else b"".join(command)
            trips.append([name.decode().upper() for name in _COMMAND.findall(bytes(packed))])
        return await send(self, command, check_health)

    monkeypatch.setattr(pool, "get_connection", marked)
    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    yield trips


def form(body: bytes) -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("target_type", "Task")
    data.add_field("target_id", "1")
    data.add_field("file", body, filename="notes.txt", content_type="text/plain")
    return data


ASYNC = {"Prefer": "respond-async"}


async def _round_trips(svc, monkeypatch, send, **headers) -> list[list[str]]:
    """The round trips of the second of two identical requests (the first loads the scripts)."""
    for attempt in range(2):
        with counting(monkeypatch, svc.client.app) as trips:
            resp = await send({**svc.auth(), **ASYNC, **headers, "X-Attempt": str(attempt)})
            assert resp.status == 202, await resp.text()
    return trips


@pytest.mark.parametrize("idempotency", [False, True])
async def test_a_multipart_create_makes_two_round_trips(make_service, monkeypatch, idempotency):
    """Before: HGETALL, EVALSHA, SET, WATCH, EXISTS, MULTI/PSETEX/ZADD/EXEC, and a SET NX first with an
    Idempotency-Key (6 or 7)."""
    async with make_service(byte_budget=10**12) as svc:
        counter = iter(range(10))

        def send(headers):
            if idempotency:
                headers["Idempotency-Key"] = f"k-{next(counter)}"
            return svc.client.post("/v1/attachments", data=form(b"x" * 65536), headers=headers)

        # the claim, the limits and the budget in one script; the owner key and the job in the other
        assert await _round_trips(svc, monkeypatch, send) == [["EVALSHA"], ["EVALSHA"]]


async def test_a_raw_create_makes_two_round_trips(make_service, monkeypatch):
    async with make_service(byte_budget=10**12) as svc:

        def send(headers):
            return svc.client.post(
                "/v1/attachments?target_type=Task&target_id=1&filename=a.txt", data=b"x" * 1000, headers=headers
            )

        assert await _round_trips(svc, monkeypatch, send) == [["EVALSHA"], ["EVALSHA"]]


async def test_a_json_create_makes_three_round_trips(make_service, monkeypatch):
    """The limits come first (the file limit applies while the JSON is parsed), the charge once the base64 is
    decoded, then the job."""
    async with make_service(byte_budget=10**12) as svc:

        def send(headers):
            return svc.client.post(
                "/v1/attachments",
                headers=headers,
                json={"target_type": "Task", "target_id": "1", "filename": "a.txt", "data": "aGVsbG8="},
            )

        assert await _round_trips(svc, monkeypatch, send) == [["EVALSHA"], ["EVALSHA"], ["EVALSHA"]]


async def test_a_change_makes_one_round_trip(service, monkeypatch):
    def send(headers):
        return service.client.delete(f"/v1/attachments/{uuid.uuid4()}", headers=headers)

    assert await _round_trips(service, monkeypatch, send) == [["EVALSHA"]]
