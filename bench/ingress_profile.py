"""Where the ingress spends its time: py-spy samples `attachd ingress` while bench/ingress.py's client loads it.

    python -m bench.ingress_profile [--size 64K] [--contender attachd|attachd-raw] [--seconds 8] [--top 25]

Writes bench/out/ingress-<contender>-<size>.txt (py-spy's collapsed stacks; flamegraph.pl or speedscope
draw them) and prints the functions with the most samples, by self time and by inclusive time. Only
samples holding the GIL count (--gil): the Python work that serializes the process; --nonblocking keeps
py-spy from pausing it. Time in the kernel (file creation, page-cache writes) does not show here: compare
the CPU s/GiB split that bench/ingress.py prints (user vs sys).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.ingress import OUT, SIZES, build, payload, run_cell, start_servers, wait_ready
from services.embedded import EmbeddedRedis

PY_SPY = str(Path(sys.executable).parent / "py-spy")


def summarize(collapsed: Path, top: int) -> None:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")" if " (" in f else f
            for f in stack.split(";")
        ]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    print(f"\n{total} samples")
    for title, counter in (("self", own), ("inclusive", inclusive)):
        print(f"\n-- by {title} time --")
        for frame, n in counter.most_common(top):
            print(f"{100 * n / total:5.1f}%  {frame}")


async def main(args: argparse.Namespace) -> None:
    OUT.mkdir(exist_ok=True)
    stem = OUT / f"ingress-{args.contender}-{args.size}"
    OUT.joinpath("ingress-tmp").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=OUT / "ingress-tmp") as tmp_name:
        tmp = Path(tmp_name)
        redis = EmbeddedRedis(tmp / "redis")
        servers = start_servers(tmp, redis.start(), {args.contender})
        server = servers[args.contender]
        try:
            await wait_ready(server.port, "/readyz")
            request = build(args.contender, payload(SIZES[args.size]))
            await run_cell(args.contender, args.size, request, server.port, server.proc, 1.0)  # warm up
            spy = subprocess.Popen(
                [
                    PY_SPY,
                    "record",
                    "--pid",
                    str(server.popen.pid),
                    "--rate",
                    "250",
                    "--nonblocking",
                    "--gil",
                    "--format",
                    "raw",
                    "-o",
                    f"{stem}.txt",
                    "--duration",
                    str(int(args.seconds)),
                ],
                stdout=subprocess.DEVNULL,
            )
            await asyncio.sleep(0.5)
            cell = await run_cell(args.contender, args.size, request, server.port, server.proc, args.seconds - 1)
            print(f"{cell.per_s:.1f} uploads/s, {cell.mib_s:.1f} MiB/s, {cell.cpu_s_per_gib:.2f} CPU s/GiB")
            spy.wait()
        finally:
            server.popen.terminate()
            server.popen.wait(30)
            redis.stop()
    summarize(Path(f"{stem}.txt"), args.top)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="64K", choices=list(SIZES))
    parser.add_argument("--contender", default="attachd", choices=("attachd", "attachd-raw"))
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--top", type=int, default=25)
    asyncio.run(main(parser.parse_args()))
