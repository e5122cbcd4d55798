"""Peak RSS of one worker-like process running make_variants over the corpus.

Run by ``bench.thumbnails`` in a fresh process per variant (the environment,
e.g. MALLOC_ARENA_MAX, must be set before libc's malloc starts):

    python -m bench.worker_rss --passes 3 [--threads 2] [--only NAME] [--path FILE.jpg] [--glibc-defaults]

Prints one JSON line. Imports only what the worker imports for media.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
from concurrent.futures import ThreadPoolExecutor

from bench import corpus
from workers.media import configure_vips, make_variants

_PAGE = os.sysconf("SC_PAGE_SIZE")


def peak_mb() -> float:
    """Peak RSS of this process (VmHWM). Not getrusage's ru_maxrss: on Linux that keeps the
    high-water mark of the parent that forked us across exec."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", help="substring of the file names to keep")
    parser.add_argument("--path", help="one image file instead of the corpus (JPEG)")
    parser.add_argument("--copies", type=int, default=1, help="with --path: that many at once")
    parser.add_argument(
        "--glibc-defaults",
        action="store_true",
        help="configure_vips(bound_malloc=False): glibc's malloc as it comes (or as the environment sets it)",
    )
    args = parser.parse_args()
    if args.path:
        jobs = [(args.path, "image/jpeg")] * args.copies
    else:
        jobs = [(i.path, i.content_type) for i in corpus.load() if not args.only or args.only in i.name]
    configure_vips(bound_malloc=not args.glibc_defaults)  # as WorkerContext.open does
    out = {"baseline_mb": round(rss_mb()), "passes": []}
    for _ in range(args.passes):
        with ThreadPoolExecutor(args.threads) as pool:  # the worker's media_executor
            for result in pool.map(lambda job: make_variants(job[0], job[1], max_pixels=100_000_000), jobs):
                assert result.small
        out["passes"].append({"peak_mb": round(peak_mb()), "rss_after_mb": round(rss_mb())})
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.update(
        peak_mb=round(peak_mb()),
        user_s=round(usage.ru_utime, 2),
        sys_s=round(usage.ru_stime, 2),
        minor_faults=usage.ru_minflt,
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
