"""Reads at 2,000,000 rows: attachd's query service vs the same SQL run directly with asyncpg.

    python -m bench.reads                        # load once (bench/load_reads.py), then 3 rounds
    python -m bench.reads --rounds 5 --duration 10 --connections 8
    python -m bench.reads --only list,count_account
    python -m bench.reads --profile list         # py-spy the query service under one workload

Each workload runs against two contenders, interleaved (A B, then B A, ...):

- ``attachd``: ``attachd query`` in its own process (pool of 20, as in production), driven by wrk
  over loopback with ``--connections`` keep-alive connections, one bearer token per account;
- ``direct``: a separate Python process running the very SQL the service runs (captured from
  ``services.core.repository`` and the query handler) with asyncpg, a pool of the same size and
  the same number of concurrent clients; no HTTP, no auth, no JSON.

The requests of a workload cycle through a few hundred targets (chosen by hash, the same on every
run). Prints a Markdown report and writes raw numbers to bench/out/reads.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import secrets
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.load_reads import OUT, PG_DIR, Params, bench_database_url, load, summary
from services.core import db, listing, repository
from services.core.auth import READ, mint_token
from services.core.records import API_COLUMNS
from services.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
WORK = OUT / "reads"
POOL_SIZE = 20  # services.web.engines.pool_ctx, and its reset_session=False
LIMIT = 50
TARGETS = {
    "list": (3000, 3.0),
    "descendants_ticket": (3000, 3.0),
    "count_account": (None, 5.0),
    "count_target": (None, 5.0),
}
WORKLOADS = ("list", "descendants_ticket", "descendants_project", "query", "count_account", "count_target")
DESCRIBE = {
    "list": "list by target, default order, limit 50",
    "descendants_ticket": "descendants=true of a Ticket, limit 50",
    "descendants_project": "descendants=true of a Project, limit 50",
    "query": "POST /query: ancestor + created_at + attachment_type, 50 records",
    "count_account": "count, largest account, no target filter",
    "count_target": "count, largest account, by target",
}


# --------------------------------------------------------------------------------------------- requests


def _sample_sql(where: str, n: int) -> str:
    # Deterministic "random": order by a hash of the key.
    return (
        f"SELECT account_id, target_type, target_id FROM attachment_counts WHERE {where} "
        f"ORDER BY md5(account_id || target_type || target_id) LIMIT {n}"
    )


class _Capture:
    """Stands in for a connection: records the statement a repository function would run."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, tuple]] = []

    async def fetch(self, sql: str, *params: Any) -> list:
        self.calls.append(("fetch", sql, params))
        return []

    async def fetchval(self, sql: str, *params: Any) -> Any:
        self.calls.append(("fetchval", sql, params))
        return 0


def _list_call(f: repository.ListFilter, order):
    return lambda c: repository.list_attachments(c, f, order, LIMIT, None, columns=API_COLUMNS)


async def _captured(call) -> tuple[str, str, tuple]:
    cap = _Capture()
    await call(cap)
    assert len(cap.calls) == 1, cap.calls
    return cap.calls[0]


async def build_requests(url: str) -> dict[str, list[dict[str, Any]]]:
    """Per workload: [{account, method, path, body, kind, sql, params}] — the HTTP request and its SQL."""
    from services.query.handlers import _query_filter

    conn = await asyncpg.connect(url)
    try:
        largest = await conn.fetchval("SELECT account_id FROM account_attachment_counts ORDER BY live DESC LIMIT 1")
        samples = {
            "list": await conn.fetch(
                _sample_sql("target_type IN ('Project', 'Ticket', 'TicketNote', 'TimeEntry') AND live > 0", 400)
            ),
            "descendants_ticket": await conn.fetch(_sample_sql("target_type = 'Ticket' AND live > 0", 400)),
            "descendants_project": await conn.fetch(_sample_sql("target_type = 'Project' AND live > 0", 200)),
            "count_target": await conn.fetch(
                _sample_sql(
                    f"account_id = '{largest}' AND target_type IN ('Project', 'Ticket', 'TicketNote', 'TimeEntry')", 400
                )
            ),
        }
        samples["query"] = samples["descendants_ticket"]
    finally:
        await conn.close()

    order = listing.parse_order_by(None)
    out: dict[str, list[dict[str, Any]]] = {}
    for workload in WORKLOADS:
        reqs = []
        rows = samples.get(workload) or [{"account_id": largest, "target_type": None, "target_id": None}]
        for r in rows:
            account, ttype, tid = r["account_id"], r["target_type"], r["target_id"]
            body = None
            if workload == "list":
                path = f"/v1/attachments?target_type={ttype}&target_id={tid}&limit={LIMIT}"
                f = repository.ListFilter(account_id=account, target_type=ttype, target_id=tid)
                kind, sql, params = await _captured(_list_call(f, order))
            elif workload.startswith("descendants"):
                path = f"/v1/attachments?target_type={ttype}&target_id={tid}&descendants=true&limit={LIMIT}"
                f = repository.ListFilter(
                    account_id=account, target_type=ttype, target_id=tid, ancestor=f"{ttype}:{tid}"
                )
                kind, sql, params = await _captured(_list_call(f, order))
            elif workload == "query":
                path = "/v1/attachments/query"
                body = {
                    "filter": [
                        {"field": "ancestor", "op": "eq", "value": f"{ttype}:{tid}"},
                        {"field": "created_at", "op": "gte", "value": "2023-06-01T00:00:00Z"},
                        {"field": "attachment_type", "op": "in", "value": ["FILE_ATTACHMENT", "URL"]},
                    ],
                    "max_records": LIMIT,
                }
                query, f = _query_filter(body, account)
                kind, sql, params = await _captured(
                    lambda c: repository.query_attachments(c, f, query.max_records, None, columns=API_COLUMNS)
                )
            elif workload == "count_account":
                path = "/v1/attachments/count"
                f = repository.ListFilter(account_id=account)
                kind, sql, params = await _captured(lambda c: repository.count_attachments(c, f))
            else:  # count_target
                path = f"/v1/attachments/count?target_type={ttype}&target_id={tid}"
                f = repository.ListFilter(account_id=account, target_type=ttype, target_id=tid)
                kind, sql, params = await _captured(lambda c: repository.count_attachments(c, f))
            reqs.append(
                {
                    "account": account,
                    "method": "POST" if body else "GET",
                    "path": path,
                    "body": body,
                    "kind": kind,
                    "sql": sql,
                    "params": list(params),
                }
            )
        out[workload] = reqs
    return out


def write_wrk_script(workload: str, reqs: list[dict[str, Any]], secret: str) -> Path:
    tokens = {a: mint_token(secret, account=a, sub="bench", scope=READ) for a in {r["account"] for r in reqs}}
    # wrk.format() needs the Host header, which wrk sets only after the script is loaded: format in init().
    lines = ["local specs = {}", "local reqs = {}"]
    for r in reqs:
        headers = {"Authorization": f"Bearer {tokens[r['account']]}"}
        body = "nil"
        if r["body"] is not None:
            headers["Content-Type"] = "application/json"
            body = _lua_string(orjson.dumps(r["body"]).decode())
        lua_headers = "{" + ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()) + "}"
        lines.append(
            f"specs[#specs + 1] = {{{_lua_string(r['method'])}, {_lua_string(r['path'])}, {lua_headers}, {body}}}"
        )
    lines += [
        "local i = 0",
        "function setup(thread) thread:set('offset', math.random(#specs)) end",
        "function init(args)",
        "  for k, s in ipairs(specs) do reqs[k] = wrk.format(s[1], s[2], s[3], s[4]) end",
        "  i = tonumber(offset) or 0",
        "end",
        "function request() i = i % #reqs + 1; return reqs[i] end",
        "function response(status, headers, body)",
        "  if status ~= 200 then io.stderr:write('status ' .. status .. ': ' .. body .. '\\n') end",
        "end",
    ]
    path = WORK / f"{workload}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


# --------------------------------------------------------------------------------------------- CPU

_HZ = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _HZ
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0


def postgres_pids(data_dir: Path | None) -> list[int]:
    """The embedded server's postmaster and its backends (none for a server given by URL)."""
    if data_dir is None or not (data_dir / "postmaster.pid").exists():
        return []
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == postmaster:
                        pids.append(int(entry))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
    return pids


class CpuMeter:
    """CPU seconds used by some processes between start() and stop(); on a shared machine the CPU
    a request costs is steadier than the requests a second it gets."""

    def __init__(self, pids_of) -> None:
        self._pids_of = pids_of

    def start(self) -> None:
        self._before = {pid: _cpu_s(pid) for pid in self._pids_of()}

    def stop(self) -> float:
        # Backends started during the run count from zero.
        return sum(_cpu_s(pid) - self._before.get(pid, 0.0) for pid in self._pids_of())


# --------------------------------------------------------------------------------------------- contenders

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not m:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(port: int, script: Path, connections: int, duration: float) -> dict[str, float]:
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration:.0f}s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    out = proc.stdout
    if "Non-2xx" in out or "status " in proc.stderr:
        raise RuntimeError(f"wrk saw errors:\n{out}\n{proc.stderr[:2000]}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    dist = dict(re.findall(r"^\s+(\d+)%\s+(\S+)$", out, re.M))
    return {"rps": rps, "p50": _ms(dist["50"]), "p99": _ms(dist["99"]), "requests": requests}


def run_direct(url: str, reqs_file: Path, workload: str, connections: int, duration: float) -> dict[str, float]:
    cmd = [
        sys.executable,
        "-m",
        "bench.reads",
        "--direct-worker",
        str(reqs_file),
        "--workload",
        workload,
        "--connections",
        str(connections),
        "--duration",
        str(duration),
        "--database-url",
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(proc.stdout.strip().splitlines()[-1])


async def direct_worker(url: str, reqs: list[dict[str, Any]], connections: int, duration: float) -> dict:
    """The contender: the same statements, asyncpg, the service's pool size, ``connections`` clients."""
    pool = await db.create_pool(url, min_size=POOL_SIZE, max_size=POOL_SIZE, reset_session=False)
    prepared = []
    for r in reqs:
        params = [_param(p) for p in r["params"]]
        prepared.append((r["kind"], r["sql"], params))
    latencies: list[float] = []
    stop_at = 0.0

    async def client(offset: int) -> None:
        i = offset
        n = len(prepared)
        while True:
            kind, sql, params = prepared[i % n]
            i += 1
            started = time.perf_counter()
            if started >= stop_at:
                return
            async with pool.acquire() as conn:
                if kind == "fetch":
                    await conn.fetch(sql, *params)
                else:
                    await conn.fetchval(sql, *params)
            latencies.append(time.perf_counter() - started)

    # Warm the pool's statement caches, as the service's are after its warm-up.
    stop_at = time.perf_counter() + 1.0
    await asyncio.gather(*(client(k * 37) for k in range(connections)))
    latencies.clear()
    # The backends of this pool, for their CPU (Postgres on this machine only).
    conns = [await pool.acquire() for _ in range(POOL_SIZE)]
    backends = [await c.fetchval("SELECT pg_backend_pid()") for c in conns]
    for c in conns:
        await pool.release(c)
    pg_before = sum(_cpu_s(pid) for pid in backends)
    cpu_before = time.process_time()
    began = time.perf_counter()
    stop_at = began + duration
    await asyncio.gather(*(client(k * 37 + 11) for k in range(connections)))
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu_before
    pg_cpu = sum(_cpu_s(pid) for pid in backends) - pg_before
    await pool.close()
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50": _pct(latencies, 50) * 1000,
        "p99": _pct(latencies, 99) * 1000,
        "requests": len(latencies),
        "client_cpu_s": cpu,
        "pg_cpu_s": pg_cpu,
    }


def _pct(sorted_values: list[float], pct: float) -> float:
    k = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def _param(value: Any) -> Any:
    # JSON round trip: restore the types asyncpg needs.
    if isinstance(value, dict) and "__dt__" in value:
        import datetime as dt

        return dt.datetime.fromisoformat(value["__dt__"])
    if isinstance(value, list):
        return [_param(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    import datetime as dt

    if isinstance(value, dt.datetime):
        return {"__dt__": value.isoformat()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------- the service


class QueryService:
    def __init__(self, url: str, secret: str, root: Path = ROOT) -> None:
        self.port = free_port()
        files = OUT / "reads-files"
        files.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "ATTACHD_DATABASE_URL": url,
            "ATTACHD_JWT_SECRET": secret,
            "ATTACHD_STORAGE_URL": f"file://{files}",
            "ATTACHD_HOST": "127.0.0.1",
            "ATTACHD_PORT": str(self.port),
            "ATTACHD_LOG_LEVEL": "WARNING",
        }
        # From `root`'s own services/ (a baseline checkout runs its own code).
        env["PYTHONPATH"] = str(root)
        self.proc = subprocess.Popen([sys.executable, "-m", "services.cli", "query"], env=env, cwd=root)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("attachd query did not become ready")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def check_same_answers(port: int, secret: str, url: str, reqs: dict[str, list[dict[str, Any]]]) -> None:
    """The service and the direct SQL must agree (ids and counts) before we time them."""
    import aiohttp

    pool = await db.create_pool(url, max_size=2)
    async with aiohttp.ClientSession() as http:
        for workload, items in reqs.items():
            for r in items[:5]:
                token = mint_token(secret, account=r["account"], sub="bench", scope=READ)
                async with http.request(
                    r["method"],
                    f"http://127.0.0.1:{port}{r['path']}",
                    json=r["body"],
                    headers={"Authorization": f"Bearer {token}"},
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    got = await resp.json()
                params = [_param(p) for p in r["params"]]
                if r["kind"] == "fetch":
                    rows = await pool.fetch(r["sql"], *params)
                    want = [str(x["id"]) for x in rows[:LIMIT]]
                    assert [a["id"] for a in got["attachments"]] == want, (workload, r["path"])
                else:
                    truth_sql = "SELECT count(*) FROM attachments WHERE " + repository.list_where(_filter_of(r)).sql()
                    truth = await pool.fetchval(truth_sql, *repository.list_where(_filter_of(r)).params.values)
                    assert got["count"] == await pool.fetchval(r["sql"], *params) == truth, (workload, got, truth)
    await pool.close()


def _filter_of(r: dict[str, Any]) -> repository.ListFilter:
    m = re.search(r"target_type=([^&]+)&target_id=([^&]+)", r["path"])
    return repository.ListFilter(account_id=r["account"], target_type=m and m.group(1), target_id=m and m.group(2))


async def explain_all(url: str, reqs: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    conn = await asyncpg.connect(url)
    await db._init_connection(conn)
    plans = {}
    try:
        for workload, items in reqs.items():
            r = items[0]
            params = [_param(p) for p in r["params"]]
            for _ in range(3):  # warm
                await conn.fetch(r["sql"], *params)
            rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + r["sql"], *params)
            plans[workload] = "\n".join(x[0] for x in rows)
        # What the count would cost without attachment_counts: the count(*) it replaces.
        largest = reqs["count_account"][0]["account"]
        where = repository.list_where(repository.ListFilter(account_id=largest))
        sql = f"SELECT count(*) FROM attachments WHERE {where.sql()}"
        for _ in range(2):
            await conn.fetchval(sql, *where.params.values)
        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *where.params.values)
        plans["count_account (count(*), the fallback)"] = "\n".join(x[0] for x in rows)
    finally:
        await conn.close()
    return plans


# --------------------------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(mem_kb / 1048576, 1),
        "python": platform.python_version(),
        "git": rev.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "load_avg_start": os.getloadavg(),
    }


def _span(values: list[float], fmt: str) -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def report(results: dict[str, dict[str, list[dict[str, float]]]], connections: int) -> str:
    lines = [
        "| query | contender | req/s | p50 ms | p99 ms | attachd / direct req/s "
        "| CPU µs/request: Python process | CPU µs/request: Postgres |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for workload, by in results.items():
        ratio = [a["rps"] / d["rps"] for a, d in zip(by["attachd"], by["direct"])]
        for name in by:
            runs = by[name]
            lines.append(
                f"| {DESCRIBE[workload] if name == 'attachd' else ''} | {name} | "
                f"{_span([r['rps'] for r in runs], '{:,.0f}')} | {_span([r['p50'] for r in runs], '{:.2f}')} "
                f"| {_span([r['p99'] for r in runs], '{:.2f}')} "
                f"| {_span(ratio, '{:.2f}') if name == 'attachd' else ''} "
                f"| {_span([r['service_cpu_us'] for r in runs], '{:.0f}')} "
                f"| {_span([r['pg_cpu_us'] for r in runs], '{:.0f}')} |"
            )
    rounds = len(next(iter(results.values()))["attachd"])
    wrk_cpu = statistics.median(r["loadgen_cpu_us"] for by in results.values() for r in by["attachd"])
    loads = [r["load_avg_1m"] for by in results.values() for runs in by.values() for r in runs]
    lines += [
        "",
        f"Median (min–max) over {rounds} interleaved rounds, {connections} concurrent clients each; "
        f"1-minute load average during the runs {min(loads):.1f}–{max(loads):.1f} on "
        f"{os.cpu_count()} CPUs. The Python process is `attachd query` (attachd) or the asyncpg client "
        f"(direct); wrk used {wrk_cpu:.0f} "
        f"µs/request.",
        "",
        "| target | figure | met |",
        "|---|---|---|",
    ]
    for workload, (rps_target, p99_target) in TARGETS.items():
        if workload not in results:
            continue
        runs = results[workload]["attachd"]
        rps = statistics.median(r["rps"] for r in runs)
        p99 = statistics.median(r["p99"] for r in runs)
        cpu = statistics.median(r["service_cpu_us"] for r in runs)
        ok = (rps_target is None or rps >= rps_target) and p99 <= p99_target
        want = (f"≥ {rps_target:,} req/s, " if rps_target else "") + f"p99 ≤ {p99_target:g} ms"
        lines.append(
            f"| {DESCRIBE[workload]}: {want} | {rps:,.0f} req/s, p99 {p99:.2f} ms "
            f"(service {cpu:.0f} CPU-µs/request: at most {1e6 / cpu:,.0f} req/s on one core) | "
            f"{'met' if ok else 'NOT met'} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per run")
    parser.add_argument("--connections", type=int, default=4, help="concurrent clients, both contenders")
    parser.add_argument("--only", default=",".join(WORKLOADS))
    parser.add_argument("--profile", default=None, help="py-spy the service under this workload, then stop")
    parser.add_argument("--no-explain", action="store_true")
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="DIR",
        help="a third contender: another checkout's query service (git archive REV | tar -x -C DIR)",
    )
    parser.add_argument("--direct-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workload", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.direct_worker:
        reqs = json.loads(Path(args.direct_worker).read_text())[args.workload]
        # The event loop the service runs on (services.cli: uvloop when installed, ATTACHD_EVENT_LOOP).
        from services.cli import _event_loop

        with asyncio.Runner(loop_factory=_event_loop) as runner:
            result = runner.run(direct_worker(args.database_url, reqs, args.connections, args.duration))
            result["loop"] = type(runner.get_loop()).__module__
        print(json.dumps(result))
        return

    workloads = [w for w in args.only.split(",") if w]
    WORK.mkdir(parents=True, exist_ok=True)
    url, server = bench_database_url()
    service = None
    services: dict[str, QueryService] = {}
    try:
        asyncio.run(load(url, Params()))
        info = {"machine": machine(), "data": asyncio.run(summary(url))}
        reqs = asyncio.run(build_requests(url))
        reqs = {w: reqs[w] for w in workloads}
        reqs_file = WORK / "requests.json"
        reqs_file.write_text(
            json.dumps({w: [{**r, "params": _jsonable(r["params"])} for r in rs] for w, rs in reqs.items()})
        )
        reqs = json.loads(reqs_file.read_text())
        secret = secrets.token_urlsafe(32)
        scripts = {w: write_wrk_script(w, reqs[w], secret) for w in workloads}
        service = QueryService(url, secret)
        services = {"attachd": service}
        if args.baseline:
            services["baseline"] = QueryService(url, secret, Path(args.baseline).resolve())
        asyncio.run(check_same_answers(service.port, secret, url, reqs))
        print(
            f"attachd query on :{service.port} (pid {service.proc.pid}); answers agree with the direct SQL", flush=True
        )

        if args.profile:
            out = OUT / f"reads-profile-{args.profile}.txt"
            spy = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--format",
                    "raw",
                    "-r",
                    "200",
                    "-o",
                    str(out),
                    "-d",
                    str(int(args.duration)),
                    "-p",
                    str(service.proc.pid),
                ]
            )
            print(run_wrk(service.port, scripts[args.profile], args.connections, args.duration), flush=True)
            spy.wait()
            print(f"collapsed stacks in {out}")
            return

        for w in workloads:  # warm caches and statement caches on every side
            for svc in services.values():
                run_wrk(svc.port, scripts[w], args.connections, 2)
            run_direct(url, reqs_file, w, args.connections, 2)
        names = ["attachd", "direct", *(["baseline"] if args.baseline else [])]
        results: dict[str, dict[str, list[dict[str, float]]]] = {w: {n: [] for n in names} for w in workloads}
        pg_dir = PG_DIR if str(PG_DIR) in url else None
        pg_cpu = CpuMeter(lambda: postgres_pids(pg_dir))
        for rnd in range(args.rounds):
            for w in workloads:
                order = names[rnd % len(names) :] + names[: rnd % len(names)]  # rotate who goes first
                for name in order:
                    pg_cpu.start()
                    svc = services.get(name)
                    service_cpu = CpuMeter(lambda: [svc.proc.pid] if svc is not None else [])
                    service_cpu.start()
                    children = resource.getrusage(resource.RUSAGE_CHILDREN)
                    if svc is not None:
                        r = run_wrk(svc.port, scripts[w], args.connections, args.duration)
                        after = resource.getrusage(resource.RUSAGE_CHILDREN)
                        r["service_cpu_us"] = service_cpu.stop() / r["requests"] * 1e6
                        wrk_s = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
                        r["loadgen_cpu_us"] = wrk_s / r["requests"] * 1e6
                        r["pg_cpu_us"] = pg_cpu.stop() / r["requests"] * 1e6
                    else:
                        r = run_direct(url, reqs_file, w, args.connections, args.duration)
                        r["service_cpu_us"] = r["client_cpu_s"] / r["requests"] * 1e6
                        # Its backends, measured by the worker over the timed window only.
                        r["pg_cpu_us"] = r["pg_cpu_s"] / r["requests"] * 1e6
                        pg_cpu.stop()
                    r["load_avg_1m"] = os.getloadavg()[0]
                    results[w][name].append(r)
                    print(
                        f"round {rnd + 1} {w:<20} {name:<8} {r['rps']:>8,.0f} req/s  p50 {r['p50']:.2f} ms  "
                        f"p99 {r['p99']:.2f} ms  cpu/req: {'client' if name == 'direct' else 'service'} "
                        f"{r['service_cpu_us']:.0f} us, postgres {r['pg_cpu_us']:.0f} us  "
                        f"(load {r['load_avg_1m']:.1f})",
                        flush=True,
                    )
        plans = {} if args.no_explain else asyncio.run(explain_all(url, reqs))
        info["machine"]["load_avg_end"] = os.getloadavg()
        text = report(results, args.connections)
        print()
        print(text)
        for name, plan in plans.items():
            print(f"\n{name}:\n{plan}")
        (OUT / "reads.json").write_text(
            json.dumps(
                {
                    **info,
                    "connections": args.connections,
                    "duration_s": args.duration,
                    "results": results,
                    "plans": plans,
                    "report": text,
                },
                indent=2,
                default=str,
            )
        )
    finally:
        for svc in (services or {}).values():
            svc.stop()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
