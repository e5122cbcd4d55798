"""The job contract between writers (the ingress, internal services) and the workers.

Jobs travel through arq as JSON (orjson), never pickle, so any service can
enqueue them; ``workers/JOBS.md`` documents the payloads. Each write job
reports its outcome under ``attachd:outcome:<job id>`` (kept for a day) and
announces it on the ``attachd:outcomes`` channel, so a waiting ingress
replica wakes at once instead of polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Mapping
from typing import Any

import orjson
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import expires_extra_ms, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms

QUEUE = "attachd:queue"
OUTCOME_CHANNEL = "attachd:outcomes"
OUTCOME_TTL_S = 24 * 3600
CONTRACT_VERSION = 1

INGEST = "ingest"
UPDATE = "update_attachment"
CANCEL = "cancel_attachment"
CLOSE_SESSION = "close_session"
PUT_TARGET = "put_target"
SET_LINKS = "set_links"


def serialize(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data)


def deserialize(data: bytes) -> dict[str, Any]:
    return orjson.loads(data)


def redis_settings(url: str) -> RedisSettings:
    settings = RedisSettings.from_dsn(url)
    settings.conn_retries = 10
    settings.retry_on_timeout = True
    return settings


async def connect(url: str) -> ArqRedis:
    return await create_pool(
        redis_settings(url), job_serializer=serialize, job_deserializer=deserialize, default_queue_name=QUEUE
    )


def outcome_key(job_id: str) -> str:
    return f"attachd:outcome:{job_id}"


# arq's enqueue_job in one round trip (it takes three: WATCH, EXISTS, then MULTI/PSETEX/ZADD/EXEC), and
# atomic without WATCH because a script is. Optionally SETs one more key (the ingress's upload owner) first,
# whether or not the job is new, as a separate SET before enqueue_job did.
# KEYS: arq:job:<id>, arq:result:<id>, the queue[, mark]. ARGV: job id, job, expiry ms, score[, mark value,
# mark TTL s]. Returns 1 when queued, 0 when the job is queued or its result kept (arq's uniqueness).
_ENQUEUE = """
if KEYS[4] then redis.call('SET', KEYS[4], ARGV[5], 'EX', ARGV[6]) end
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
return 1
"""
_enqueue_scripts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _enqueue_script(redis):
    script = _enqueue_scripts.get(redis)
    if script is None:
        script = _enqueue_scripts[redis] = redis.register_script(_ENQUEUE)
    return script


async def enqueue(
    redis: ArqRedis, function: str, job_id: str, payload: Mapping[str, Any], *, mark: tuple[str, str, int] | None = None
) -> bool:
    """Enqueue one job; False when a job with this id is already queued or done (arq's uniqueness).

    Writes exactly what ``ArqRedis.enqueue_job(function, body, _job_id=job_id)`` writes, with JSON as the
    serializer: the job under ``arq:job:<id>`` for arq's default expiry, scored by its enqueue time in the
    queue. ``mark`` = (key, value, TTL s) is SET in the same round trip.
    """
    body = {"v": CONTRACT_VERSION, "job_id": job_id, **payload}
    now = timestamp_ms()
    job = serialize_job(function, (body,), {}, None, now, serializer=serialize)
    queue = getattr(redis, "default_queue_name", QUEUE)
    keys = [job_key_prefix + job_id, result_key_prefix + job_id, queue]
    args = [job_id, job, getattr(redis, "expires_extra_ms", expires_extra_ms), now]
    if mark is not None:
        keys.append(mark[0])
        args += [mark[1], mark[2]]
    return bool(await _enqueue_script(redis)(keys=keys, args=args))


async def publish_outcome(redis, job_id: str, outcome: Mapping[str, Any]) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(outcome_key(job_id), orjson.dumps(outcome), ex=OUTCOME_TTL_S)
        pipe.publish(OUTCOME_CHANNEL, job_id)
        await pipe.execute()


async def read_outcome(redis, job_id: str) -> dict[str, Any] | None:
    raw = await redis.get(outcome_key(job_id))
    return None if raw is None else orjson.loads(raw)


class OutcomeWaiter:
    """One pub/sub subscription per process, fanned out to the requests waiting on it."""

    def __init__(self, redis) -> None:
        self._redis = redis
        self._waiting: dict[str, list[asyncio.Future]] = {}
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="attachd-outcome-listener")
        await asyncio.wait_for(self._ready.wait(), 10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(OUTCOME_CHANNEL)
                    self._ready.set()
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            self._wake(message["data"].decode())
            except asyncio.CancelledError:
                raise
            except Exception:
                # A dropped connection: waiters re-read the outcome key, so nothing is missed.
                for futures in self._waiting.values():
                    for fut in futures:
                        if not fut.done():
                            fut.set_result(None)
                await asyncio.sleep(0.5)

    def _wake(self, job_id: str) -> None:
        for fut in self._waiting.pop(job_id, ()):
            if not fut.done():
                fut.set_result(None)

    async def wait(self, job_id: str, timeout: float) -> dict[str, Any] | None:
        """The job's outcome, or None if it has not finished within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            fut = loop.create_future()
            self._waiting.setdefault(job_id, []).append(fut)
            try:
                # Registered before reading, so a publish in between still wakes us.
                outcome = await read_outcome(self._redis, job_id)
                if outcome is not None:
                    return outcome
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                try:
                    await asyncio.wait_for(fut, remaining)
                except TimeoutError:
                    return await read_outcome(self._redis, job_id)
            finally:
                waiting = self._waiting.get(job_id)
                if waiting is not None:
                    with contextlib.suppress(ValueError):
                        waiting.remove(fut)
                    if not waiting:
                        del self._waiting[job_id]
