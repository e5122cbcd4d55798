"""The state of tus uploads, in Redis (durable with AOF), so any ingress process continues any upload.

- ``attachd:tus:<id>``: the upload (:class:`TusUpload`, JSON): its owner, its create fields, its length and
  its storage progress (``offset`` bytes durably stored). A finished upload's state lives as long as its
  status does (``jobs.UPLOAD_TTL_S``), so a HEAD still answers with its offset.
- ``attachd:tus:<id>:lock``: held by the one request writing the upload (a PATCH, a DELETE), with a short
  TTL that it renews: a process that dies frees it within ``LOCK_TTL_S``. Every save checks the lock is
  still the saver's, so a request that lost it changes nothing.
- ``attachd:tus:expiring``: sorted set of the unfinished uploads by expiry time, for the sweeper.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator

import msgspec
from redis.asyncio import Redis

from services.core.contract import Actor, NewAttachment
from services.core.jobs import UPLOAD_TTL_S
from services.core.storage import Resumable

LOCK_TTL_S = 10
EXPIRING = "attachd:tus:expiring"


class TusUpload(msgspec.Struct, kw_only=True):
    id: str
    account_id: str
    actor: Actor
    length: int
    metadata: dict[str, str]  # as the client sent it (a HEAD answers with it)
    fields: NewAttachment  # the create fields, validated when the upload was created
    max_file_bytes: int  # the account's limit then: the worker holds the file to it
    expires: float  # Unix time; each PATCH moves it on
    write: Resumable
    done: bool = False  # the last byte arrived and the ingest job is queued

    @property
    def offset(self) -> int:
        return self.write.offset


class Locked(Exception):
    """Another request is writing this upload."""


class LockLost(Exception):
    """The lock lapsed while its request was still writing (it stalled longer than LOCK_TTL_S)."""


def state_key(upload_id: str) -> str:
    return f"attachd:tus:{upload_id}"


def lock_key(upload_id: str) -> str:
    return f"attachd:tus:{upload_id}:lock"


# Save an upload if the lock is still the caller's. KEYS: state, lock, expiring. ARGV: token, state,
# expiry time ('' once finished), TTL s of a finished upload's state.
_SAVE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if ARGV[3] == '' then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[4])
  redis.call('ZREM', KEYS[3], string.match(KEYS[1], '[^:]+$'))
else
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[3], ARGV[3], string.match(KEYS[1], '[^:]+$'))
end
return 1
"""
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class TusUploads:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._save = redis.register_script(_SAVE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def create(self, upload: TusUpload) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(state_key(upload.id), msgspec.json.encode(upload))
            pipe.zadd(EXPIRING, {upload.id: upload.expires})
            await pipe.execute()

    async def get(self, upload_id: str) -> TusUpload | None:
        raw = await self._redis.get(state_key(upload_id))
        return None if raw is None else msgspec.json.decode(raw, type=TusUpload)

    async def save(self, upload: TusUpload, token: str) -> None:
        """Store the upload's new state; LockLost (nothing stored) if ``token`` no longer holds its lock."""
        expires = "" if upload.done else repr(upload.expires)
        keys = [state_key(upload.id), lock_key(upload.id), EXPIRING]
        if not await self._save(keys=keys, args=[token, msgspec.json.encode(upload), expires, UPLOAD_TTL_S]):
            raise LockLost(upload.id)

    async def delete(self, upload_id: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(state_key(upload_id))
            pipe.zrem(EXPIRING, upload_id)
            await pipe.execute()

    @contextlib.asynccontextmanager
    async def locked(self, upload_id: str) -> AsyncIterator[str]:
        """Hold the upload's lock (renewed while held); its token, for ``save``. Locked if another has it."""
        token = secrets.token_hex(16)
        key = lock_key(upload_id)
        if not await self._redis.set(key, token, nx=True, px=LOCK_TTL_S * 1000):
            raise Locked(upload_id)

        async def renew() -> None:
            while True:
                await asyncio.sleep(LOCK_TTL_S / 3)
                await self._renew(keys=[key], args=[token, LOCK_TTL_S * 1000])

        renewing = asyncio.create_task(renew())
        try:
            yield token
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await renewing
            with contextlib.suppress(Exception):
                await self._release(keys=[key], args=[token])

    async def expired(self, now: float, limit: int = 500) -> list[str]:
        """Ids of unfinished uploads whose expiry has passed, oldest first."""
        ids = await self._redis.zrangebyscore(EXPIRING, "-inf", now, start=0, num=limit)
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    async def unfinished(self) -> list[TusUpload]:
        """Every upload still receiving bytes (the sweeper leaves their storage alone)."""
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in await self._redis.zrange(EXPIRING, 0, -1)]
        found: list[TusUpload] = []
        for start in range(0, len(ids), 500):
            for raw in await self._redis.mget([state_key(i) for i in ids[start : start + 500]]):
                if raw is not None:
                    found.append(msgspec.json.decode(raw, type=TusUpload))
        return found
