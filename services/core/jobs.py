"""How jobs travel: the queue, enqueueing, outcomes, and the entry point for internal producers.

Jobs are the typed Structs of ``services.core.contract``, carried by arq as
JSON, never pickle, so any service can enqueue them (``workers/JOBS.md``).
Each write job reports its outcome under ``attachd:outcome:<job id>`` (kept
for a day) and announces it on the ``attachd:outcomes`` channel, so a waiting
ingress replica wakes at once instead of polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any

import msgspec
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import expires_extra_ms, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from prometheus_client import Gauge
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.core import budget, encoding, storage
from services.core.contract import FUNCTIONS, AnyOutcome, Base64Source, IngestJob, Job, decode_outcome, encode
from services.core.settings import Settings
from services.core.storage import Storage

log = logging.getLogger("attachd.jobs")

QUEUE = "attachd:queue"
OUTCOME_CHANNEL = "attachd:outcomes"
OUTCOME_TTL_S = 24 * 3600
UPLOAD_TTL_S = 24 * 3600


def serialize(data: dict[str, Any]) -> bytes:
    return encode(data)


def deserialize(data: bytes) -> dict[str, Any]:
    # Plain JSON: each job function decodes its own argument into its Struct (workers/outcomes.py).
    decoded: dict[str, Any] = msgspec.json.decode(data)
    return decoded


def redis_settings(url: str) -> RedisSettings:
    settings = RedisSettings.from_dsn(url)
    settings.conn_retries = 10
    settings.retry_on_timeout = True
    return settings


async def connect(url: str) -> ArqRedis:
    return await create_pool(
        redis_settings(url), job_serializer=serialize, job_deserializer=deserialize, default_queue_name=QUEUE
    )


REDIS_AOF = Gauge(
    "attachd_redis_aof", "1 when Redis logs every write to its append-only file, 0 when it does not, -1 unknown"
)
_persistence_seen: list[bool | None] = []


async def check_redis_persistence(redis: Redis) -> bool | None:
    """Whether Redis keeps what it acknowledged across a crash (``appendonly yes``); None when it will not
    say (CONFIG disabled, as on some managed services). Sets the gauge and warns, once per change."""
    try:
        reply = await redis.config_get("appendonly")
        aof: bool | None = reply.get("appendonly") == "yes"
    except RedisError:
        aof = None
    REDIS_AOF.set(-1 if aof is None else int(aof))
    if not _persistence_seen or _persistence_seen[-1] != aof:
        _persistence_seen.append(aof)
        if aof is False:
            log.warning(
                "Redis runs without its append-only file (appendonly no): a Redis crash loses queued jobs "
                "(re-driven from staging after ATTACHD_STAGING_GRACE_S), upload statuses, idempotency keys "
                "and the events stream's tail (relayed again). Set appendonly yes; see docs/reliability.md."
            )
        elif aof is None:
            log.warning("Redis does not say whether it persists with AOF (CONFIG GET refused); make sure it does")
    return aof


def outcome_key(job_id: str) -> str:
    return f"attachd:outcome:{job_id}"


def owner_key(job_id: str) -> str:
    """Which account a write belongs to, for ``GET /v1/uploads/{id}``."""
    return f"attachd:upload:{job_id}"


# arq's enqueue_job in one round trip (it takes three: WATCH, EXISTS, then MULTI/PSETEX/ZADD/EXEC), and
# atomic without WATCH because a script is. Optionally SETs two more keys first, whether or not the job is
# new: the write's owner, and the request's Idempotency-Key, which only now names the job (until the job is
# queued it says "pending", so a request that dies first leaves its key free to be retried).
# KEYS: arq:job:<id>, arq:result:<id>, the queue[, owner[, idempotency]]. ARGV: job id, job, expiry ms,
# score[, owner value, TTL s[, idempotency TTL s]]. Returns 1 when queued, 0 when the job is queued or its
# result kept (arq's uniqueness).
_ENQUEUE = """
if KEYS[4] then redis.call('SET', KEYS[4], ARGV[5], 'EX', ARGV[6]) end
if KEYS[5] then redis.call('SET', KEYS[5], ARGV[1], 'EX', ARGV[7]) end
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
return 1
"""
_enqueue_scripts: weakref.WeakKeyDictionary[Redis, Any] = weakref.WeakKeyDictionary()


def _enqueue_script(redis: Redis) -> Any:
    script = _enqueue_scripts.get(redis)
    if script is None:
        script = _enqueue_scripts[redis] = redis.register_script(_ENQUEUE)
    return script


async def enqueue(
    redis: ArqRedis, job: Job, *, mark: tuple[str, str, int] | None = None, idempotency: tuple[str, int] | None = None
) -> bool:
    """Enqueue one job; False when a job with its id is already queued or done (arq's uniqueness).

    Writes exactly what ``ArqRedis.enqueue_job(function, job, _job_id=job.job_id)`` writes, with JSON as
    the serializer: the job under ``arq:job:<id>`` for arq's default expiry, scored by its enqueue time in
    the queue. ``mark`` = (key, value, TTL s) is SET in the same round trip, and with it ``idempotency`` =
    (key, TTL s) to the job's id.
    """
    now = timestamp_ms()
    payload = serialize_job(FUNCTIONS[type(job)], (job,), {}, None, now, serializer=serialize)
    queue = getattr(redis, "default_queue_name", QUEUE)
    keys = [job_key_prefix + job.job_id, result_key_prefix + job.job_id, queue]
    args: list[Any] = [job.job_id, payload, getattr(redis, "expires_extra_ms", expires_extra_ms), now]
    if mark is not None:
        keys.append(mark[0])
        args += [mark[1], mark[2]]
        if idempotency is not None:
            keys.append(idempotency[0])
            args.append(idempotency[1])
    return bool(await _enqueue_script(redis)(keys=keys, args=args))


async def submit(
    redis: ArqRedis, job: Job, *, store: Storage | None = None, idempotency_key: str | None = None
) -> bool:
    """Queue a job and record which account owns it (for its status URL), in one round trip; with
    ``idempotency_key``, that key now names the job.

    With ``store`` the job is first written as the upload's manifest, so the sweeper can re-drive it if
    Redis loses it.
    """
    if store is not None:
        await store.put_bytes(storage.manifest_key(job.job_id), encode({"function": FUNCTIONS[type(job)], "job": job}))
    idempotency = None if idempotency_key is None else (idempotency_key, UPLOAD_TTL_S)
    return await enqueue(
        redis, job, mark=(owner_key(job.job_id), job.account_id, UPLOAD_TTL_S), idempotency=idempotency
    )


async def submit_ingest(redis: ArqRedis, store: Storage, settings: Settings, job: IngestJob) -> bool:
    """The entry point for internal Python services: queue an ingest job exactly as the ingress does.

    The account's limits apply (its file limit goes into the job unless the job sets a smaller one) and its
    byte budget is charged the decoded size of inline base64; a refusal raises the API's error (413, 429)
    and queues nothing. Bytes the job names by ``key`` must already be staged under ``staging/<job id>/``.
    Follow the outcome with ``OutcomeWaiter`` or ``read_outcome``.
    """
    gate = budget.ByteBudget(redis)
    admission = await gate.admit(settings, job.account_id, job.job_id, budget.base64_charge(job.items))
    limit = admission.limits.max_file_bytes
    job.max_file_bytes = limit if job.max_file_bytes is None else min(job.max_file_bytes, limit)
    for item in job.items:
        if isinstance(item.source, Base64Source) and item.source.data is not None:
            encoding.check_size(item.source.data, limit)
    return await submit(redis, job, store=store)


async def publish_outcome(redis: Redis, job_id: str, outcome: AnyOutcome) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(outcome_key(job_id), encode(outcome), ex=OUTCOME_TTL_S)
        pipe.publish(OUTCOME_CHANNEL, job_id)
        await pipe.execute()


async def read_outcome(redis: Redis, job_id: str) -> AnyOutcome | None:
    raw = await redis.get(outcome_key(job_id))
    if raw is None:
        return None
    try:
        return decode_outcome(raw)
    except msgspec.DecodeError:  # not this contract's (written before an upgrade): as if not there yet
        log.warning("the outcome of job %s is not one this version can read", job_id)
        return None


class OutcomeWaiter:
    """One pub/sub subscription per process, fanned out to the requests waiting on it."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None
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

    async def wait(self, job_id: str, timeout: float) -> AnyOutcome | None:
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
