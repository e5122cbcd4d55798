"""What every job function gets: the engines, opened once per worker process."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from services.core import db
from services.core.settings import Settings
from services.core.startup import reach
from services.core.storage import Storage, open_storage
from workers.media import configure_vips

log = logging.getLogger("attachd.worker")
TMP_PREFIX = "attachd-worker-"


_made_here: set[str] = set()  # this process's own temp directories (it may open several contexts)


def _alive(pid: int, path: Path) -> bool:
    if pid == os.getpid():
        return str(path) in _made_here  # else a predecessor that had our pid (a restarted container)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_tmp_dirs(base: str) -> int:
    """Remove the temp directories of workers that died without cleaning up (killed, OOM); how many."""
    removed = 0
    for path in Path(base).glob(f"{TMP_PREFIX}*"):
        pid_text = path.name[len(TMP_PREFIX) :].partition("-")[0]
        if path.is_dir() and pid_text.isdigit() and not _alive(int(pid_text), path):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    if removed:
        log.info("removed %d temp directories of workers that died", removed)
    return removed


def make_tmp_dir(settings: Settings) -> str:
    base = settings.tmp_dir or tempfile.gettempdir()
    os.makedirs(base, exist_ok=True)
    remove_dead_tmp_dirs(base)
    path = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=base)
    _made_here.add(path)
    return path


@dataclass
class WorkerContext:
    settings: Settings
    pool: asyncpg.Pool
    storage: Storage
    tmp_dir: str
    # libvips releases the GIL, so threads give real parallelism; sized to the cores it may use.
    media_executor: ThreadPoolExecutor

    @classmethod
    async def open(cls, settings: Settings) -> WorkerContext:
        configure_vips(decode_budget_bytes=settings.decode_budget_bytes)
        url = settings.database_url
        pool = await reach("Postgres", url, db.create_pool(url, max_size=max(4, settings.worker_concurrency)))
        opening = open_storage(
            settings.storage_url, s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region
        )
        try:
            store = await reach("storage", settings.storage_url, opening)
        except BaseException:
            await pool.close()
            raise
        return cls(
            settings=settings,
            pool=pool,
            storage=store,
            tmp_dir=make_tmp_dir(settings),
            media_executor=ThreadPoolExecutor(max_workers=2, thread_name_prefix="attachd-media"),
        )

    async def close(self) -> None:
        self.media_executor.shutdown(wait=True)
        await self.pool.close()
        await self.storage.close()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
