"""End to end: photo uploads through the ingress until the row is committed with both variants.

    python -m bench.e2e [--rounds 3] [--sustained-s 30] [--open-s 30] [--inflight 12]

One ``attachd ingress`` and one ``attachd worker`` process, on an embedded Postgres and Redis and file
storage under bench/out/e2e/ (all started here, all stopped at the end). Each round runs, in an order
that rotates:

- ``bare``       ``workers.media.make_variants`` over the corpus in a process of its own, on a 2-thread pool
                 (the worker's media pool): whole passes, each shuffled the same way in every run, until
                 ``--sustained-s`` have gone by: images/s;
- ``sustained``  multipart uploads (``Prefer: respond-async``) of the same passes for as long, ``--inflight``
                 at a time, each lane sending its next photo once its last one is committed: committed
                 images/s, from the first send to the last commit;
- ``open``       uploads sent at half of this round's ``sustained`` rate, on a fixed schedule whatever the
                 answers: per-upload commit latency, from the scheduled send to the commit.

"Committed" is when the worker's outcome reaches the ``attachd:outcomes`` channel (what a waiting ingress
wakes on), read by the client on its own clock. After each phase every upload is checked: its outcome is
``complete`` and its row has the photo's width x height and both variants, on disk. Between the phase
snapshots, the worker's ``attachd_ingest_stage_seconds`` and the ingress's request histogram give the
time per stage, and /proc the CPU each process spent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import psutil
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from bench import corpus
from bench.ingress import Connection, Request, machine
from services.core import contract, db, jobs
from services.core.auth import mint_token
from services.core.settings import Settings
from services.embedded import EmbeddedPostgres, EmbeddedRedis, free_port, terminate

OUT = corpus.OUT
WORK = OUT / "e2e"
SECRET = "bench-secret-bench-secret-bench-secret"
ACCOUNT = "bench"
BOUNDARY = "----attachdE2EBoundary7MA4YWxkTrZu0gW"
MAX_PIXELS = Settings().max_image_pixels
MEDIA_THREADS = 2  # workers.context: the worker's media pool
SEED = 20261122
COMMIT_TIMEOUT_S = 120
STAGES = ("queue_wait", "fetch", "validate", "media_wait", "thumbnail", "storage", "commit", "finish")


def one_pass(items: list[corpus.Item], n: int) -> list[int]:
    """Indexes into ``items``: pass ``n`` over the corpus, shuffled, the same in every run and process."""
    order = list(range(len(items)))
    random.Random(SEED + n).shuffle(order)
    return order


def whole_passes(items: list[corpus.Item], seconds: float) -> Iterator[int]:
    """Pass after pass until one ends ``seconds`` after the first began: every run covers the corpus's mix."""
    started = time.perf_counter()
    n = 0
    while n == 0 or time.perf_counter() - started < seconds:
        yield from one_pass(items, n)
        n += 1


# --- the bare thumbnailer: a process of its own -------------------------------------------------------------


def bare_child(seconds: float) -> None:
    from workers.media import configure_vips, make_variants

    items = corpus.load()
    configure_vips()  # as WorkerContext.open does

    def thumbnail(index: int) -> bool:
        item = items[index]
        result = make_variants(item.path, item.content_type, max_pixels=MAX_PIXELS)
        return result.thumbnail is not None and result.small is not None

    with ThreadPoolExecutor(MEDIA_THREADS) as pool:
        list(pool.map(thumbnail, one_pass(items, 0)[:MEDIA_THREADS]))  # libvips' first calls, untimed
        cpu0, started = time.process_time(), time.perf_counter()
        pending: set[Future] = set()
        images = ok = 0
        for index in whole_passes(items, seconds):  # a few queued ahead, so no thread waits on the feeder
            pending.add(pool.submit(thumbnail, index))
            images += 1
            if len(pending) > 2 * MEDIA_THREADS:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                ok += sum(f.result() for f in done)
        ok += sum(f.result() for f in pending)
        elapsed, cpu_s = time.perf_counter() - started, time.process_time() - cpu0
    print(json.dumps({"images": images, "ok": ok, "seconds": elapsed, "cpu_s": cpu_s}))


async def run_bare(seconds: float) -> dict[str, Any]:
    machine0 = machine_cpu()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.e2e", "--bare-child", str(seconds), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    machine_s = machine_cpu() - machine0
    if proc.returncode:
        raise RuntimeError(f"the bare thumbnailer exited with {proc.returncode}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    if result["ok"] != result["images"]:
        raise RuntimeError(f"the bare thumbnailer made both variants for {result['ok']} of {result['images']}")
    result["per_s"] = result["images"] / result["seconds"]
    result["others_cores"] = (machine_s - result["cpu_s"]) / result["seconds"]  # roughly: includes start-up
    return result


# --- the stack: Postgres, Redis, ingress, worker ------------------------------------------------------------


@dataclass
class Stack:
    database_url: str
    redis_url: str
    files: Path
    ingress_port: int
    worker_port: int
    procs: dict[str, subprocess.Popen]
    pg_data: Path
    redis_pid: int

    def processes(self) -> dict[str, list[psutil.Process]]:
        """The processes whose CPU counts, by part; Postgres is its postmaster and every backend."""
        postmaster = psutil.Process(int((self.pg_data / "postmaster.pid").read_text().split()[0]))
        return {
            "ingress": [psutil.Process(self.procs["ingress"].pid)],
            "worker": [psutil.Process(self.procs["worker"].pid)],
            "postgres": [postmaster, *postmaster.children(recursive=True)],
            "redis": [psutil.Process(self.redis_pid)],
            "client": [psutil.Process()],
        }


def spawn(part: str, port: int, env: dict[str, str]) -> subprocess.Popen:
    log = open(WORK / f"{part}.log", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", part, "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_ready(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        time.sleep(0.2)
    raise RuntimeError(f"nothing ready on port {port} within {timeout:.0f}s; see {WORK}/*.log")


@contextlib.contextmanager
def running_stack():
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    postgres, redis = EmbeddedPostgres(WORK / "pg"), EmbeddedRedis(WORK / "redis")
    procs: dict[str, subprocess.Popen] = {}
    try:
        database_url, redis_url = postgres.start(), redis.start()
        asyncio.run(db.migrate(database_url))
        files = WORK / "files"
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "ATTACHD_DATABASE_URL": database_url,
            "ATTACHD_REDIS_URL": redis_url,
            "ATTACHD_STORAGE_URL": f"file://{files}",
            "ATTACHD_JWT_SECRET": SECRET,
            "ATTACHD_HOST": "127.0.0.1",
            "ATTACHD_LOG_LEVEL": "WARNING",
            # the budget stays on (its Redis script runs for every upload, as deployed), just large
            "ATTACHD_BYTE_BUDGET": str(1 << 50),
        }
        ports = {"ingress": free_port(), "worker": free_port()}
        for part, port in ports.items():
            procs[part] = spawn(part, port, env)
        for port in ports.values():
            wait_ready(port)
        yield Stack(
            database_url, redis_url, files, ports["ingress"], ports["worker"], procs, WORK / "pg", redis._proc.pid
        )
    finally:
        for proc in procs.values():
            terminate(proc, grace_s=30)
        redis.stop()
        postgres.stop()


# --- the client -------------------------------------------------------------------------------------------


def upload_request(item: corpus.Item, index: int) -> Request:
    fields = {"target_type": "Task", "target_id": str(index), "name": item.name}
    preamble = b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    )
    preamble += (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{item.name}"\r\n'
        f"Content-Type: {item.content_type}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    data = Path(item.path).read_bytes()
    headers = {
        "Authorization": f"Bearer {mint_token(SECRET, account=ACCOUNT, ttl_s=24 * 3600)}",
        "Prefer": "respond-async",
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "Content-Length": str(len(preamble) + len(data) + len(tail)),
    }
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return Request(f"POST /v1/attachments HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode() + preamble, data, tail)


class Commits:
    """The client's clock when each job's outcome is announced: the channel a waiting ingress wakes on."""

    def __init__(self, redis_url: str) -> None:
        self._redis = aioredis.from_url(redis_url)
        self._seen: dict[str, float] = {}
        self._waiting: dict[str, asyncio.Future] = {}
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(jobs.OUTCOME_CHANNEL)
        self._task = asyncio.create_task(self._listen(pubsub))

    async def _listen(self, pubsub) -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                job_id, now = message["data"].decode(), time.perf_counter()
                self._seen[job_id] = now
                if (fut := self._waiting.pop(job_id, None)) is not None:
                    fut.set_result(now)

    async def wait(self, job_id: str) -> float:
        if job_id in self._seen:  # announced before the 202 reached us
            return self._seen[job_id]
        fut = self._waiting[job_id] = asyncio.get_running_loop().create_future()
        return await asyncio.wait_for(fut, COMMIT_TIMEOUT_S)

    async def outcomes(self, job_ids: list[str]) -> list[contract.AnyOutcome | None]:
        raw = await self._redis.mget([jobs.outcome_key(j) for j in job_ids])
        return [None if r is None else contract.decode_outcome(r) for r in raw]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose()


@dataclass
class Upload:
    item: int
    job_id: str
    sent: float  # the scheduled send (open loop) or the actual one (sustained)
    accepted: float  # the 202 is in
    committed: float = math.nan

    @property
    def latency(self) -> float:
        return self.committed - self.sent


async def send(conn: Connection, request: Request) -> str:
    status, body = await conn.send(request)
    if status != 202:
        raise RuntimeError(f"HTTP {status}: {body[:300]!r}")
    return orjson.loads(body)["id"]


async def sustained(
    port: int, requests: list[Request], order: Iterator[int], inflight: int, commits: Commits
) -> list[Upload]:
    uploads: list[Upload] = []
    queue = iter(order)  # shared by the lanes; next() never awaits, so no lock

    async def lane() -> None:
        conn = Connection(port)
        try:
            for index in queue:
                sent = time.perf_counter()
                job_id = await send(conn, requests[index])
                upload = Upload(index, job_id, sent, time.perf_counter())
                upload.committed = await commits.wait(job_id)
                uploads.append(upload)
        finally:
            conn.close()

    await asyncio.gather(*(lane() for _ in range(inflight)))
    return uploads


async def open_loop(
    port: int, requests: list[Request], order: list[int], rate: float, commits: Commits
) -> tuple[list[Upload], float]:
    """Upload ``order`` at ``rate``/s on a fixed schedule; returns the uploads and the worst lateness."""
    idle: list[Connection] = []
    uploads: list[Upload] = []
    lateness = 0.0
    start = time.perf_counter() + 0.2

    async def one(n: int, index: int) -> None:
        nonlocal lateness
        at = start + n / rate
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        lateness = max(lateness, time.perf_counter() - at)
        conn = idle.pop() if idle else Connection(port)
        job_id = await send(conn, requests[index])
        idle.append(conn)
        upload = Upload(index, job_id, at, time.perf_counter())
        upload.committed = await commits.wait(job_id)
        uploads.append(upload)

    try:
        await asyncio.gather(*(one(n, index) for n, index in enumerate(order)))
    finally:
        for conn in idle:
            conn.close()
    return uploads, lateness


# --- what the product says: metrics and CPU ---------------------------------------------------------------


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def cpu_seconds(stack: Stack) -> dict[str, float]:
    spent: dict[str, float] = {}
    for part, procs in stack.processes().items():
        total = 0.0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        spent[part] = total
    spent["machine"] = machine_cpu()
    return spent


def machine_cpu() -> float:
    t = psutil.cpu_times()
    return t.user + t.system + t.nice + getattr(t, "irq", 0) + getattr(t, "softirq", 0)


@dataclass
class Snapshot:
    worker: dict
    ingress: dict
    cpu: dict[str, float]
    at: float

    @classmethod
    def take(cls, stack: Stack) -> Snapshot:
        return cls(scrape(stack.worker_port), scrape(stack.ingress_port), cpu_seconds(stack), time.perf_counter())


def breakdown(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    """Mean seconds per observation of each stage, and CPU seconds per part, between two snapshots."""

    def delta(samples_before: dict, samples_after: dict, name: str, labels: dict[str, str]) -> float:
        key = (name, tuple(sorted(labels.items())))
        return samples_after.get(key, 0.0) - samples_before.get(key, 0.0)

    stages = {}
    for stage in STAGES:
        count = delta(before.worker, after.worker, "attachd_ingest_stage_seconds_count", {"stage": stage})
        total = delta(before.worker, after.worker, "attachd_ingest_stage_seconds_sum", {"stage": stage})
        stages[stage] = {"count": count, "sum_s": total, "mean_s": total / count if count else math.nan}
    route = {"app": "ingress", "route": "/v1/attachments"}
    count = delta(before.ingress, after.ingress, "attachd_http_request_seconds_count", route)
    total = delta(before.ingress, after.ingress, "attachd_http_request_seconds_sum", route)
    stages["ingress_request"] = {"count": count, "sum_s": total, "mean_s": total / count if count else math.nan}
    cpu = {part: after.cpu[part] - before.cpu[part] for part in after.cpu}
    return {"stages": stages, "cpu_s": cpu, "wall_s": after.at - before.at}


# --- checking what was committed --------------------------------------------------------------------------


async def verify(stack: Stack, commits: Commits, items: list[corpus.Item], uploads: list[Upload]) -> int:
    """Every upload complete, its row with the photo's size and both variants on disk; returns the count."""
    outcomes = await commits.outcomes([u.job_id for u in uploads])
    ids, expected = [], {}
    for upload, outcome in zip(uploads, outcomes, strict=True):
        if not isinstance(outcome, contract.Ingested):
            raise RuntimeError(f"upload {upload.job_id} ({items[upload.item].name}) did not complete: {outcome}")
        attachment_id = str(outcome.attachments[0].id)
        ids.append(attachment_id)
        expected[attachment_id] = items[upload.item]
    conn = await asyncpg.connect(stack.database_url)
    try:
        rows = await conn.fetch("SELECT id, width, height, variants FROM attachments WHERE id = ANY($1::uuid[])", ids)
    finally:
        await conn.close()
    if len(rows) != len(ids):
        raise RuntimeError(f"{len(ids)} uploads complete but {len(rows)} rows")
    for row in rows:
        item = expected[str(row["id"])]
        variants = json.loads(row["variants"]) if isinstance(row["variants"], str) else row["variants"]
        if row["width"] is None or row["height"] is None or row["width"] * row["height"] != item.pixels:
            raise RuntimeError(f"{item.name}: row has {row['width']}x{row['height']}")
        for name in ("thumbnail", "small"):
            if not variants or not (stack.files / variants[name]["key"]).is_file():
                raise RuntimeError(f"{item.name}: no {name} variant on disk")
    return len(rows)


def drop_objects(stack: Stack) -> None:
    """Committed files are not needed once checked; keeps the disk from filling over the rounds."""
    shutil.rmtree(stack.files / "objects", ignore_errors=True)


# --- the rounds -------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def latency_summary(uploads: list[Upload]) -> dict[str, float]:
    latencies = [u.latency for u in uploads]
    return {
        "p50": percentile(latencies, 0.50),
        "p90": percentile(latencies, 0.90),
        "p99": percentile(latencies, 0.99),
        "max": max(latencies),
        "n": len(latencies),
    }


async def measured(stack: Stack, phase):
    before = Snapshot.take(stack)
    result = await phase()
    await asyncio.sleep(0.3)  # the worker's "finish" observations land just after the outcomes
    after = Snapshot.take(stack)
    return result, breakdown(before, after)


async def run_round(
    stack: Stack,
    commits: Commits,
    items: list[corpus.Item],
    requests: list[Request],
    args: argparse.Namespace,
    bare_first: bool,
) -> dict[str, Any]:
    result: dict[str, Any] = {"bare_first": bare_first}
    if bare_first:
        result["bare"] = await run_bare(args.sustained_s)
    order = whole_passes(items, args.sustained_s)
    uploads, result["sustained_breakdown"] = await measured(
        stack, lambda: sustained(stack.ingress_port, requests, order, args.inflight, commits)
    )
    seconds = max(u.committed for u in uploads) - min(u.sent for u in uploads)
    result["sustained"] = {
        "images": len(uploads),
        "seconds": seconds,
        "per_s": len(uploads) / seconds,
        "verified": await verify(stack, commits, items, uploads),
    }
    drop_objects(stack)
    if not bare_first:
        result["bare"] = await run_bare(args.sustained_s)
    result["ratio"] = result["sustained"]["per_s"] / result["bare"]["per_s"]

    rate = result["sustained"]["per_s"] / 2
    open_order = list(itertools.islice(whole_passes(items, math.inf), max(1, round(rate * args.open_s))))
    (uploads, lateness), result["open_breakdown"] = await measured(
        stack, lambda: open_loop(stack.ingress_port, requests, open_order, rate, commits)
    )
    result["open"] = {
        "rate": rate,
        "lateness_s": lateness,
        **latency_summary(uploads),
        "verified": await verify(stack, commits, items, uploads),
        "by_format": by_format(items, uploads),
    }
    drop_objects(stack)
    return result


def by_format(items: list[corpus.Item], uploads: list[Upload]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[float]] = defaultdict(list)
    for u in uploads:
        item = items[u.item]
        label = "100-MP JPEG" if item.pixels >= 50_000_000 else item.label
        groups[label].append(u.latency)
    return {label: {"n": len(v), "median": statistics.median(v), "max": max(v)} for label, v in groups.items()}


async def run_all(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    items = corpus.load()
    requests = [upload_request(item, i) for i, item in enumerate(items)]
    commits = Commits(stack.redis_url)
    await commits.start()
    try:
        print(f"corpus: {len(items)} images; warming up (one pass through the service)", flush=True)
        warm = await sustained(stack.ingress_port, requests, one_pass(items, 0), args.inflight, commits)
        await verify(stack, commits, items, warm)
        drop_objects(stack)
        rounds = []
        for n in range(args.rounds):
            started = time.perf_counter()
            r = await run_round(stack, commits, items, requests, args, bare_first=n % 2 == 0)
            rounds.append(r)
            print(
                f"round {n + 1}: bare {r['bare']['per_s']:.2f}/s, e2e {r['sustained']['per_s']:.2f}/s "
                f"({r['ratio']:.2f}x), open {r['open']['rate']:.2f}/s p50 {r['open']['p50'] * 1000:.0f} ms "
                f"p99 {r['open']['p99'] * 1000:.0f} ms ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
        return {"machine": machine(), "corpus": len(items), "inflight": args.inflight, "rounds": rounds}
    finally:
        await commits.close()


# --- the report -------------------------------------------------------------------------------------------


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def ours_cpu_per_image(r: dict[str, Any]) -> float:
    cpu = r["sustained_breakdown"]["cpu_s"]
    return sum(v for k, v in cpu.items() if k != "machine") / r["sustained"]["images"]


def others_cores(breakdown: dict[str, Any]) -> float:
    """Cores busy with processes not ours (the other sessions on the machine)."""
    cpu = breakdown["cpu_s"]
    return (cpu["machine"] - sum(v for k, v in cpu.items() if k != "machine")) / breakdown["wall_s"]


def report(result: dict[str, Any]) -> str:
    rounds = result["rounds"]
    m = result["machine"]
    ms = "{:.0f}"
    lines = [
        f"Machine: {m['nproc']} cores, {m['cpu']}, {m['ram_gib']} GiB; Python {m['python']}; commit "
        f"{m['commit']}; {m['date']}. Corpus {result['corpus']} images in whole passes; "
        f"{result['inflight']} uploads in flight in the sustained runs.",
        "",
        "| round | bare images/s | e2e images/s | e2e / bare | other load, cores (bare, e2e) "
        "| open rate/s | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, r in enumerate(rounds, 1):
        o = r["open"]
        others = others_cores(r["sustained_breakdown"])
        lines.append(
            f"| {n}{' (bare first)' if r['bare_first'] else ''} | {r['bare']['per_s']:.2f} | "
            f"{r['sustained']['per_s']:.2f} | {r['ratio']:.3f} | "
            f"{r['bare']['others_cores']:.2f}, {others:.2f} | "
            f"{o['rate']:.2f} | {o['p50'] * 1000:.0f} | {o['p90'] * 1000:.0f} | {o['p99'] * 1000:.0f} | "
            f"{o['max'] * 1000:.0f} |"
        )
    lines += [
        "",
        "Median (min–max) over the rounds:",
        "",
        f"- bare thumbnailer: {spread([r['bare']['per_s'] for r in rounds])} images/s",
        f"- end to end, sustained: {spread([r['sustained']['per_s'] for r in rounds])} images/s",
        f"- e2e / bare, per round: {spread([r['ratio'] for r in rounds], '{:.3f}')}",
        f"- open loop p50 {spread([r['open']['p50'] * 1000 for r in rounds], ms)} ms, "
        f"p90 {spread([r['open']['p90'] * 1000 for r in rounds], ms)} ms, "
        f"p99 {spread([r['open']['p99'] * 1000 for r in rounds], ms)} ms",
        f"- verified rows: {sum(r['sustained']['verified'] + r['open']['verified'] for r in rounds)}",
        "",
    ]
    for phase in ("sustained", "open"):
        lines += [
            f"Where the time goes, {phase} (mean ms per observation, median over rounds; per item for "
            "fetch..storage, per job otherwise):",
            "",
            "| stage | mean ms | count per round |",
            "|---|---|---|",
        ]
        for stage in ("ingress_request", *STAGES):
            means = [r[f"{phase}_breakdown"]["stages"][stage]["mean_s"] * 1000 for r in rounds]
            counts = [r[f"{phase}_breakdown"]["stages"][stage]["count"] for r in rounds]
            lines.append(f"| {stage} | {spread(means, '{:.1f}')} | {statistics.median(counts):.0f} |")
        lines += [
            "",
            f"CPU seconds per image, {phase} (median over rounds; machine = every process on it):",
            "",
            "| part | CPU s / image | cores busy |",
            "|---|---|---|",
        ]
        for part in ("ingress", "worker", "postgres", "redis", "client", "machine"):
            per_image = [
                r[f"{phase}_breakdown"]["cpu_s"][part] / r[phase]["images" if phase == "sustained" else "n"]
                for r in rounds
            ]
            busy = [r[f"{phase}_breakdown"]["cpu_s"][part] / r[f"{phase}_breakdown"]["wall_s"] for r in rounds]
            lines.append(f"| {part} | {spread(per_image, '{:.3f}')} | {spread(busy)} |")
        lines.append("")
    bare_cpu = [r["bare"]["cpu_s"] / r["bare"]["images"] for r in rounds]
    ours_cpu = [ours_cpu_per_image(r) for r in rounds]
    lines += [
        f"CPU s / image: bare thumbnailer {spread(bare_cpu, '{:.3f}')}, end to end (ingress, worker, "
        f"Postgres, Redis, client) {spread(ours_cpu, '{:.3f}')}; bare / end to end, per round (the "
        f"ratio's ceiling when the cores are the limit): "
        f"{spread([b / o for b, o in zip(bare_cpu, ours_cpu, strict=True)], '{:.3f}')}.",
        "",
        "Open-loop latency by format (last round): "
        + ", ".join(
            f"{label} n={v['n']} median {v['median'] * 1000:.0f} ms max {v['max'] * 1000:.0f} ms"
            for label, v in sorted(rounds[-1]["open"]["by_format"].items())
        ),
        "",
    ]
    lines += ["| target | measured | verdict |", "|---|---|---|"]
    ratio = statistics.median(r["ratio"] for r in rounds)
    p99 = statistics.median(r["open"]["p99"] for r in rounds)
    lines.append(
        f"| sustained ≥ 90% of the bare thumbnailer | {spread([r['ratio'] for r in rounds], '{:.3f}')} | "
        f"{'met' if ratio >= 0.9 else 'not met'} |"
    )
    lines.append(
        f"| p99 commit latency < 1 s at half that rate | "
        f"{spread([r['open']['p99'] * 1000 for r in rounds], ms)} ms | {'met' if p99 < 1 else 'not met'} |"
    )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sustained-s", type=float, default=30, help="about how long each sustained run lasts")
    p.add_argument("--open-s", type=float, default=30, help="how long each open-loop run sends for")
    p.add_argument("--inflight", type=int, default=12, help="uploads in flight in the sustained run")
    p.add_argument("--out", default=str(OUT / "e2e.json"))
    p.add_argument("--bare-child", type=float, metavar="SECONDS", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.bare_child:
        bare_child(args.bare_child)
        return
    with running_stack() as stack:
        result = asyncio.run(run_all(stack, args))
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(report(result))
    print(f"\nraw numbers: {args.out}")


if __name__ == "__main__":
    main()
