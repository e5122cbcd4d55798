"""Fixtures: real Postgres, Redis and S3 (moto's server over HTTP), started from wheels once per run.

Set ATTACHD_TEST_DATABASE_URL / ATTACHD_TEST_REDIS_URL to use servers you already run.
Each test gets its own account id, so rows never leak between tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import boto3
import hypothesis
import pytest
import pyvips
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.cli import combined_app
from services.cli import main as cli_main
from services.core import db as dbmod
from services.core import logs
from services.core.auth import READ, WRITE, mint_token
from services.core.settings import Settings, load_settings
from services.core.storage import Storage, open_storage
from services.core.urlpolicy import parse_allow_cidrs
from services.embedded import EmbeddedPostgres, EmbeddedRedis
from services.web.server import app_runner
from tests.s3server import MotoS3
from workers.settings import create_worker, stop_worker

JWT_SECRET = "test-secret-that-is-long-enough-for-hs256"

# Hypothesis fails a test whose example takes over 200 ms, then fails it as flaky when the retry is quick: on a
# busy machine a cheap example sometimes does. The properties are what these tests check, not their speed.
hypothesis.settings.register_profile("attachd", deadline=None)
hypothesis.settings.load_profile("attachd")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """``attachd`` commands run in-process point the root logger at the captured stderr of the test's call;
    put it back as it was once the call ends, or the logging of its teardown and of every later test writes to
    a closed file."""
    root = logging.getLogger()
    level = root.level
    try:
        return (yield)
    finally:
        for handler in [h for h in root.handlers if h.get_name() == logs.HANDLER_NAME]:
            root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory) -> str:
    url = os.environ.get("ATTACHD_TEST_DATABASE_URL")
    server = None
    if not url:
        server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
        url = server.start()
    asyncio.run(dbmod.migrate(url))
    yield url
    if server is not None:
        server.stop()


def database_url(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture
async def new_database(pg_url):
    """``await new_database()``: the URL of an empty database on the test server, dropped after the test."""
    admin = await asyncpg.connect(pg_url)
    made: list[str] = []

    async def make() -> str:
        name = f"scratch_{uuid.uuid4().hex[:12]}"
        await admin.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return database_url(pg_url, name)

    yield make
    for name in made:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    url = os.environ.get("ATTACHD_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    server = MotoS3()
    yield server.start()
    server.stop()


@pytest.fixture
async def db(pg_url) -> AsyncIterator[asyncpg.Pool]:
    pool = await dbmod.create_pool(pg_url, max_size=4)
    yield pool
    await pool.close()


def jpeg_bytes(width: int = 1200, height: int = 800, **save: Any) -> bytes:
    image = pyvips.Image.xyz(width, height).extract_band(0).cast("uchar")
    image = image.bandjoin([image.flip("horizontal"), (image * 0 + 128).cast("uchar")])
    return image.jpegsave_buffer(Q=85, **save)


def png_bytes(width: int = 640, height: int = 480) -> bytes:
    image = pyvips.Image.xyz(width, height).extract_band(1).cast("uchar")
    return image.bandjoin([image, image, image.flip("vertical")]).copy(interpretation="srgb").pngsave_buffer()


class ServiceTestServer(TestServer):
    """A test server run as ``attachd`` runs its apps (services.web.server): its protocol, limits, deadlines,
    and handlers that are not cancelled when their client leaves."""

    def __init__(self, app: web.Application, settings: Settings, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.settings = settings

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return app_runner(self.app, self.settings, **{**kwargs, "handler_cancellation": False})


@dataclass
class Service:
    """attachd (ingress + query on one app) with a worker, for one test and one account."""

    client: TestClient
    settings: Settings
    pool: asyncpg.Pool
    storage: Storage
    account: str
    others: list[str] = field(default_factory=list)

    def token(
        self, account: str | None = None, scope: str = f"{READ} {WRITE}", sub: str = "user-1", sub_type: str = "User"
    ) -> str:
        return mint_token(JWT_SECRET, account=account or self.account, sub=sub, sub_type=sub_type, scope=scope)

    def auth(self, account: str | None = None, **kw: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(account, **kw)}"}

    def other_account(self) -> str:
        other = f"other-{uuid.uuid4().hex[:10]}"
        self.others.append(other)
        return other

    async def rows(self, account: str | None = None) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT * FROM attachments WHERE account_id = $1 ORDER BY seq", account or self.account
        )

    async def events(self, account: str | None = None) -> list[asyncpg.Record]:
        return await self.pool.fetch("SELECT * FROM outbox WHERE account_id = $1 ORDER BY seq", account or self.account)

    async def stored_keys(self) -> list[str]:
        """Every object this account owns plus everything still staged."""
        keys = [o.key async for o in self.storage.list(f"objects/{self.account}/")]
        keys += [o.key async for o in self.storage.list("staging/")]
        return sorted(keys)

    async def settled_keys(self, timeout: float = 5.0) -> list[str]:
        """``stored_keys()`` once no staged input is left, or the timeout has passed. A worker that refuses
        an upload answers first and drops its staged input just after (a crash in between leaves the input
        to the sweeper, never an upload without an answer), so a test that saw the refusal waits for that."""
        deadline = asyncio.get_running_loop().time() + timeout
        while [o async for o in self.storage.list("staging/")] and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        return await self.stored_keys()

    async def finished_upload(self, status_url: str, timeout: float = 10.0) -> dict[str, Any]:
        """Poll a write's status URL until it is complete or failed, as an async client would."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            status = await (await self.client.get(status_url, headers=self.auth())).json()
            if status["status"] in ("complete", "failed") or asyncio.get_running_loop().time() > deadline:
                return status
            await asyncio.sleep(0.05)

    async def upload_json(self, body: dict[str, Any], *, headers: dict[str, str] | None = None):
        return await self.client.post("/v1/attachments", json=body, headers={**self.auth(), **(headers or {})})


@contextlib.asynccontextmanager
async def running_service(
    pg_url: str,
    redis_url: str,
    tmp_path: Path,
    *,
    backend: str = "file",
    s3_endpoint: str | None = None,
    **overrides: Any,
) -> AsyncIterator[Service]:
    flush = aioredis.from_url(redis_url)
    await flush.flushdb()
    await flush.aclose()
    if backend == "s3":
        bucket = f"attachd-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        storage_url = f"s3://{bucket}/data"
    else:
        storage_url = f"file://{tmp_path / 'files'}"
    # The URL-fetch tests serve from 127.0.0.1; the refusal tests pass fetch_allow_cidrs="" to undo this.
    overrides["fetch_allow_cidrs"] = parse_allow_cidrs(overrides.get("fetch_allow_cidrs", "127.0.0.0/8"))
    settings = load_settings(
        {},
        database_url=pg_url,
        redis_url=redis_url,
        storage_url=storage_url,
        s3_endpoint_url=s3_endpoint,
        jwt_secret=JWT_SECRET,
        sync_wait_s=20.0,
        **overrides,
    )
    client = TestClient(ServiceTestServer(combined_app(settings), settings))
    await client.start_server()
    # No crons: they fire on the clock's seconds (a sweep at :00 and :30), so one could run in the middle of
    # a test and take what the test's own sweep, purge or close is about to count. A test runs them itself.
    worker = create_worker(settings, handle_signals=False, poll_delay=0.01, cron_jobs=[])
    worker_task = asyncio.create_task(worker.async_run())
    storage = await open_storage(storage_url, s3_endpoint_url=s3_endpoint)
    pool = await dbmod.create_pool(pg_url, max_size=4)
    try:
        yield Service(
            client=client, settings=settings, pool=pool, storage=storage, account=f"acct-{uuid.uuid4().hex[:12]}"
        )
    finally:
        await stop_worker(worker, 5)
        worker_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker_task
        await client.close()
        await pool.close()
        await storage.close()


@pytest.fixture
async def service(pg_url, redis_url, tmp_path) -> AsyncIterator[Service]:
    async with running_service(pg_url, redis_url, tmp_path) as svc:
        yield svc


@pytest.fixture(params=["file", "s3"])
async def any_backend_service(request, pg_url, redis_url, tmp_path) -> AsyncIterator[Service]:
    endpoint = request.getfixturevalue("s3_endpoint") if request.param == "s3" else None
    async with running_service(pg_url, redis_url, tmp_path, backend=request.param, s3_endpoint=endpoint) as svc:
        yield svc


class CommandFailed(Exception):
    """An `attachd` command exited non-zero: its exit code and stderr."""


@pytest.fixture
def attachd_keys(monkeypatch, capsys, pg_url) -> Callable[..., Awaitable[list[str]]]:
    """``await attachd_keys("create", "--account", A, ...)``: `attachd keys ...` against the test database, in a
    thread (it runs its own event loop); its stdout lines (a created key is the last), or CommandFailed."""
    monkeypatch.setenv("ATTACHD_DATABASE_URL", pg_url)

    def run(argv: tuple[str, ...]) -> list[str]:
        capsys.readouterr()
        try:
            cli_main(["keys", *argv])
        except SystemExit as exc:
            raise CommandFailed(f"{exc.code}\n{capsys.readouterr().err}") from None
        return capsys.readouterr().out.splitlines()

    async def run_in_thread(*argv: str) -> list[str]:
        return await asyncio.to_thread(run, argv)

    return run_in_thread


@pytest.fixture
def make_service(pg_url, redis_url, tmp_path) -> Callable[..., contextlib.AbstractAsyncContextManager[Service]]:
    """For tests that need other settings: ``async with make_service(max_file_bytes=10) as svc``."""

    def make(**overrides: Any):
        return running_service(pg_url, redis_url, tmp_path, **overrides)

    return make


@dataclass
class Remote:
    """An HTTP server on 127.0.0.1 that serves what a test puts on it, and counts the requests."""

    server: TestServer
    files: dict[str, tuple[bytes, str, dict[str, str]]]
    hits: list[str]

    def add(
        self,
        path: str,
        body: bytes,
        content_type: str = "application/octet-stream",
        headers: dict[str, str] | None = None,
    ) -> str:
        self.files[path] = (body, content_type, headers or {})
        return str(self.server.make_url(path))

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


@pytest.fixture
async def remote(aiohttp_server) -> Remote:
    files: dict[str, tuple[bytes, str, dict[str, str]]] = {}
    hits: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        if request.path not in files:
            raise web.HTTPNotFound()
        body, content_type, headers = files[request.path]
        if "Location" in headers:
            raise web.HTTPFound(headers["Location"])
        return web.Response(body=body, content_type=content_type, headers=headers)

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handler)
    server = await aiohttp_server(app, host="127.0.0.1")
    return Remote(server=server, files=files, hits=hits)
