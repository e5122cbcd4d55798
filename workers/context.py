"""What every job function gets: the engines, opened once per worker process."""

from __future__ import annotations

import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import asyncpg

from services.core import db
from services.core.settings import Settings
from services.core.storage import Storage, open_storage
from workers.media import configure_vips


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
        pool = await db.create_pool(settings.database_url, max_size=max(4, settings.worker_concurrency))
        store = await open_storage(
            settings.storage_url, s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region
        )
        return cls(
            settings=settings,
            pool=pool,
            storage=store,
            tmp_dir=tempfile.mkdtemp(prefix="attachd-worker-"),
            media_executor=ThreadPoolExecutor(max_workers=2, thread_name_prefix="attachd-media"),
        )

    async def close(self) -> None:
        self.media_executor.shutdown(wait=True)
        await self.pool.close()
        await self.storage.close()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
