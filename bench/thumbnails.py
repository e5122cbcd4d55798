"""Thumbnailing side by side: attachd (pyvips) vs Pillow vs a decode-only floor vs thumbor.

    python -m bench.thumbnails                 # everything, ~4-7 minutes on 2 cores
    python -m bench.thumbnails --only compare  # or: scaling, rss
    python -m bench.thumbnails --runs 5 --no-thumbor

See bench/README.md for the set-up (corpus, Pillow, thumbor's venv). Prints a
Markdown report and writes the raw numbers to bench/out/thumbnails.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import corpus
from bench.corpus import OUT, Item

TARGETS = {
    "vs_thumbor": 4.0,
    "vs_pillow": 1.5,
    "vs_floor": 1.1,
    "two_procs": 1.9,
    "rss_corpus_mb": 250,
    "rss_100mp_mb": 300,
}
BEFORE_FIX = {"MALLOC_ARENA_MAX": "2"}  # what deploy/k8s/worker.yaml set before configure_vips bounded malloc
ROOT = Path(__file__).resolve().parent.parent
_HZ = os.sysconf("SC_CLK_TCK")


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all processes, all cores)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / _HZ


def _wait_quiet(max_wait_s: float, threshold: float = 0.2) -> None:
    """Wait (bounded) until the rest of the machine uses < threshold cores: the two-process
    ratio cannot be told apart from a neighbour's test run holding one of the two cores."""
    deadline = time.perf_counter() + max_wait_s
    while time.perf_counter() < deadline:
        busy = _busy_seconds()
        time.sleep(0.5)
        if (_busy_seconds() - busy) / 0.5 < threshold:
            return


def _med(values: list[float]) -> float:
    return statistics.median(values)


def _span(values: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(_med(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


# --- 1. side by side, interleaved per image -------------------------------------------------


def compare(items: list[Item], runs: int, with_thumbor: bool) -> dict:
    from bench import contenders  # Pillow only here: keeps the scaling/RSS children lean

    contenders.configure()
    fns = {"attachd": contenders.attachd, "pillow": contenders.pillow, "floor": contenders.floor}
    thumbor = contenders.Thumbor() if with_thumbor else None
    if thumbor:
        fns["thumbor"] = thumbor
    names = list(fns)
    for item in items:
        Path(item.path).read_bytes()  # page cache
    wall = {n: [[None] * len(items) for _ in range(runs)] for n in names}  # wall[name][run][image]
    cpu = {n: [[None] * len(items) for _ in range(runs)] for n in names}

    def one_pass(run: int | None, selection: list[int]) -> None:
        for i in selection:
            item = items[i]
            here = [n for n in names if n != "floor" or item.is_jpeg]
            shift = ((run or 0) + i) % len(here)  # rotate who goes first
            for name in here[shift:] + here[:shift]:
                clock = thumbor.cpu_seconds if name == "thumbor" else time.process_time
                c, w = clock(), time.perf_counter()
                fns[name](item)
                if run is not None:
                    wall[name][run][i] = time.perf_counter() - w
                    cpu[name][run][i] = clock() - c

    busy0, t0 = _busy_seconds(), time.perf_counter()
    try:
        one_pass(None, list(range(len(items)))[-6:])  # warm-up: imports, thumbor's first requests
        for run in range(runs):
            one_pass(run, list(range(len(items))))
            print(f"  compare: run {run + 1}/{runs} done", file=sys.stderr)
    finally:
        if thumbor:
            thumbor.close()
    elapsed = time.perf_counter() - t0
    return {
        "names": names,
        "items": [i.name for i in items],
        "wall": wall,
        "cpu": cpu,
        "busy_cores": (_busy_seconds() - busy0) / elapsed,
    }


def summarize_compare(items: list[Item], data: dict) -> dict:
    runs = range(len(data["wall"]["attachd"]))
    every = range(len(items))
    jpegs = [i for i, item in enumerate(items) if item.is_jpeg]

    def rate(name: str, idx, run: int, kind: str = "wall") -> float:
        return len(idx) / sum(data[kind][name][run][i] for i in idx)

    def per_image(name: str, kind: str = "wall") -> list[float]:  # median over runs, per image
        return [
            _med([data[kind][name][r][i] for r in runs]) if data[kind][name][0][i] is not None else None for i in every
        ]

    s = {"rows": {}, "ratios": {}, "by_format": {}}
    for name in data["names"]:
        idx = jpegs if name == "floor" else every
        times = per_image(name)
        cpu = per_image(name, "cpu")
        s["rows"][name] = {
            "ips": [rate(name, idx, r) for r in runs],
            "jpeg_ips": [rate(name, jpegs, r) for r in runs],
            "jpeg_median_ms": 1000 * _med([times[i] for i in jpegs]),
            "cpu_per_wall": sum(cpu[i] for i in idx) / sum(times[i] for i in idx),
        }
        for label in sorted({item.label for item in items} | {"100-MP JPEG"}):
            sel = [i for i in idx if (items[i].label if items[i].pixels < 50e6 else "100-MP JPEG") == label]
            if sel:
                s["by_format"].setdefault(label, {"n": len(sel)})[name] = 1000 * _med([times[i] for i in sel])
    for other in ("thumbor", "pillow"):
        if other in data["names"]:
            s["ratios"][f"vs_{other}"] = [rate("attachd", every, r) / rate(other, every, r) for r in runs]
            s["ratios"][f"vs_{other}_cpu"] = [
                rate("attachd", every, r, "cpu") / rate(other, every, r, "cpu") for r in runs
            ]
    attachd, floor, pil = per_image("attachd"), per_image("floor"), per_image("pillow")
    # What-if: attachd with its JPEG times replaced by the floor's (a codec as fast as Pillow's, no overhead).
    at_floor = [floor[i] if items[i].is_jpeg else attachd[i] for i in every]
    s["ratios"]["vs_pillow_if_jpeg_at_floor"] = sum(pil) / sum(at_floor)
    s["ratios"]["vs_floor"] = s["rows"]["attachd"]["jpeg_median_ms"] / s["rows"]["floor"]["jpeg_median_ms"]
    cpu_attachd, cpu_floor = per_image("attachd", "cpu"), per_image("floor", "cpu")
    s["ratios"]["vs_floor_cpu"] = _med([cpu_attachd[i] for i in jpegs]) / _med([cpu_floor[i] for i in jpegs])
    s["ratios"]["vs_floor_per_image_median"] = _med([attachd[i] / floor[i] for i in jpegs])
    s["ratios"]["vs_floor_jpeg_total"] = sum(attachd[i] for i in jpegs) / sum(floor[i] for i in jpegs)
    return s


# --- 2. one worker process vs two ---------------------------------------------------------


def _init_worker() -> None:
    from workers.media import configure_vips

    configure_vips()


def _variants(job: tuple[str, str]) -> float:
    from workers.media import make_variants

    c = time.process_time()
    make_variants(job[0], job[1], max_pixels=100_000_000)
    return time.process_time() - c


def _threaded(jobs: list[tuple[str, str]], threads: int) -> float:
    """Runs inside one worker process: the corpus through a thread pool, as the arq worker does."""
    c = time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(_variants, jobs))
    return time.process_time() - c


SCALING = {  # name: (processes, threads per process)
    "1 process": (1, 1),
    "2 processes": (2, 1),
    "1 process × 2 threads": (1, 2),
}


def _pool(procs: int):
    return multiprocessing.get_context("spawn").Pool(procs, initializer=_init_worker)


def scaling(items: list[Item], reps: int) -> dict:
    jobs = [(i.path, i.content_type) for i in items]  # largest first: the tail is not one big image
    pools = {name: _pool(procs) for name, (procs, _t) in SCALING.items()}
    out = {name: {"ips": [], "cpu_ms": [], "other_cores": []} for name in SCALING}
    try:
        for pool in pools.values():  # warm-up: imports, libvips start-up
            pool.map(_variants, jobs[-4:] * 2, chunksize=1)
        for rep in range(reps):
            for name, (_procs, threads) in SCALING.items():
                _wait_quiet(5)
                busy, w = _busy_seconds(), time.perf_counter()
                if threads == 1:
                    ours = sum(pools[name].imap_unordered(_variants, jobs, chunksize=1))
                else:
                    ours = pools[name].apply(_threaded, (jobs, threads))
                wall = time.perf_counter() - w
                out[name]["ips"].append(len(jobs) / wall)
                out[name]["cpu_ms"].append(1000 * ours / len(jobs))
                out[name]["other_cores"].append(max(0.0, (_busy_seconds() - busy - ours) / wall))
            print(f"  scaling: rep {rep + 1}/{reps} done", file=sys.stderr)
    finally:
        for pool in pools.values():
            pool.terminate()
    one = out["1 process"]["ips"]
    for name in SCALING:
        out[name]["ratio"] = [x / o for x, o in zip(out[name]["ips"], one)]
    return out


# --- 3. worker peak RSS ---------------------------------------------------------------------

PROGRESSIVE_100MP = OUT / "extra" / "big-12500x8000-progressive.jpg"  # not in the corpus: RSS only


def rss_variants(passes: int) -> list[tuple[str, dict, list[str], int | None]]:
    """(label, environment, worker_rss arguments, target MB)."""
    corpus_args = ["--passes", str(passes)]
    big = ["--passes", "2", "--only", "big-12500x8000.jpg"]
    glibc = ["--glibc-defaults"]
    return [
        ("corpus, glibc defaults", {}, corpus_args + glibc, TARGETS["rss_corpus_mb"]),
        ("corpus, MALLOC_ARENA_MAX=2 only (before the fix)", BEFORE_FIX, corpus_args + glibc, TARGETS["rss_corpus_mb"]),
        ("corpus, as shipped: configure_vips bounds malloc", {}, corpus_args, TARGETS["rss_corpus_mb"]),
        (
            "corpus, as shipped, 2 threads (the worker's pool)",
            {},
            corpus_args + ["--threads", "2"],
            TARGETS["rss_corpus_mb"],
        ),
        ("100-MP baseline JPEG alone, as shipped", {}, big, TARGETS["rss_100mp_mb"]),
        ("100-MP *progressive* JPEG alone, as shipped", {}, ["--passes", "1", "--path", str(PROGRESSIVE_100MP)], None),
        (
            "two 100-MP *progressive* JPEGs, 2 threads, as shipped",
            {},
            ["--passes", "1", "--threads", "2", "--path", str(PROGRESSIVE_100MP), "--copies", "2"],
            None,
        ),
    ]


def rss(passes: int) -> list[dict]:
    if not PROGRESSIVE_100MP.exists():
        import pyvips

        PROGRESSIVE_100MP.parent.mkdir(exist_ok=True)
        pyvips.Image.new_from_file(str(OUT / "gen" / "big-12500x8000.jpg")).jpegsave(
            str(PROGRESSIVE_100MP), Q=88, interlace=True, keep="none"
        )
    results = []
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "VIPS_"))}
    variants = rss_variants(passes)
    # Two children at a time: memory, not time, is measured here.
    for start in range(0, len(variants), 2):
        procs = [
            (
                v,
                subprocess.Popen(
                    [sys.executable, "-m", "bench.worker_rss", *v[2]],
                    cwd=ROOT,
                    env={**base_env, **v[1]},
                    stdout=subprocess.PIPE,
                    text=True,
                ),
            )
            for v in variants[start : start + 2]
        ]
        for (label, env, _args, target), proc in procs:
            stdout, _ = proc.communicate()
            if proc.returncode:
                raise SystemExit(f"worker_rss failed for {label!r}")
            results.append({"label": label, "env": env, "target_mb": target, **json.loads(stdout)})
        print(f"  rss: {len(results)}/{len(variants)} done", file=sys.stderr)
    return results


# --- report -----------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def versions() -> dict:
    import pyvips
    from PIL import __version__ as pillow

    from bench.contenders import THUMBOR_VENV

    thumbor_python = THUMBOR_VENV / "bin" / "python"
    thumbor = "not installed"
    if thumbor_python.exists():
        thumbor = (
            subprocess.run(
                [
                    str(thumbor_python),
                    "-c",
                    "import thumbor, PIL; print(f'{thumbor.__version__} (its own Pillow {PIL.__version__})')",
                ],
                capture_output=True,
                text=True,
            ).stdout.strip()
            or thumbor
        )
    with open("/proc/cpuinfo") as f:
        cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    with open("/proc/meminfo") as f:
        ram = int(f.readline().split()[1]) / 2**20
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "commit": head.stdout.strip() or "?",
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(ram, 1),
        "python": platform.python_version(),
        "libvips": ".".join(str(pyvips.version(i)) for i in range(3)),
        "pyvips": pyvips.__version__,
        "pillow": pillow,
        "thumbor": thumbor,
    }


def report(meta: dict, items: list[Item], cmp: dict | None, scale: dict | None, mem: list | None) -> str:
    lines = [
        f"Run {meta['date']} at `{meta['commit']}` on {meta['nproc']} cores ({meta['cpu']}), "
        f"{meta['ram_gib']} GiB RAM; Python {meta['python']}, libvips {meta['libvips']} "
        f"(pyvips-binary), pyvips {meta['pyvips']}, Pillow {meta['pillow']}, "
        f"thumbor {meta['thumbor']}.",
        "",
        f"Corpus: {len(items)} images, "
        + ", ".join(f"{sum(1 for i in items if i.label == lab)} {lab}" for lab in sorted({i.label for i in items}))
        + ".",
        "",
    ]
    if cmp:
        s = cmp["summary"]
        n_runs = len(s["rows"]["attachd"]["ips"])
        lines += [
            f"### Side by side ({n_runs} runs after a warm-up, contenders interleaved per image; "
            f"whole machine busy {cmp['busy_cores']:.2f} of 2 cores on average)",
            "",
            "| contender | images/s, median (min–max) | JPEG images/s | JPEG median ms/image | CPU/wall |",
            "|---|---|---|---|---|",
        ]
        for name, row in s["rows"].items():
            scope = " (JPEG only)" if name == "floor" else ""
            lines.append(
                f"| {name}{scope} | {_span(row['ips'])} | {_span(row['jpeg_ips'])} | "
                f"{row['jpeg_median_ms']:.1f} | {row['cpu_per_wall']:.2f} |"
            )
        lines += [
            "",
            "| format | n | " + " | ".join(f"{n} ms" for n in cmp["names"]) + " |",
            "|---|---|" + "---|" * len(cmp["names"]),
        ]
        for label, row in s["by_format"].items():
            lines.append(
                f"| {label} | {row['n']} | "
                + " | ".join(f"{row[n]:.0f}" if n in row else "–" for n in cmp["names"])
                + " |"
            )
        r = s["ratios"]
        lines += ["", "| target | figure | verdict |", "|---|---|---|"]
        if "vs_thumbor" in r:
            lines.append(
                f"| attachd ≥ {TARGETS['vs_thumbor']}× thumbor images/s | {_span(r['vs_thumbor'])}× "
                f"(CPU time: {_span(r['vs_thumbor_cpu'])}×) | "
                f"{_verdict(_med(r['vs_thumbor']) >= TARGETS['vs_thumbor'])} |"
            )
        lines.append(
            f"| attachd ≥ {TARGETS['vs_pillow']}× Pillow images/s | {_span(r['vs_pillow'])}× "
            f"(CPU time: {_span(r['vs_pillow_cpu'])}×) | "
            f"{_verdict(_med(r['vs_pillow']) >= TARGETS['vs_pillow'])} |"
        )
        lines.append(
            f"| (what-if: attachd's JPEG times = the floor's) | attachd/Pillow would be "
            f"{r['vs_pillow_if_jpeg_at_floor']:.2f}× | |"
        )
        lines.append(
            f"| attachd JPEG median ≤ {TARGETS['vs_floor']}× floor | {r['vs_floor']:.2f}× "
            f"(per-image ratio median {r['vs_floor_per_image_median']:.2f}×, JPEG total "
            f"{r['vs_floor_jpeg_total']:.2f}×; CPU-time medians {r['vs_floor_cpu']:.2f}×) | "
            f"{_verdict(r['vs_floor'] <= TARGETS['vs_floor'])} |"
        )
    if scale:
        lines += [
            "",
            f"### Worker processes ({len(scale['1 process']['ips'])} reps, configurations interleaved)",
            "",
            "| configuration | images/s, median (min–max) | vs 1 process | CPU ms/image | other load, cores |",
            "|---|---|---|---|---|",
        ]
        for name in SCALING:
            row = scale[name]
            lines.append(
                f"| {name} | {_span(row['ips'])} | {_span(row['ratio'])}× | "
                f"{_med(row['cpu_ms']):.0f} | {_span(row['other_cores'])} |"
            )
        two = scale["2 processes"]["ratio"]
        quiet = [
            r
            for r, a, b in zip(two, scale["1 process"]["other_cores"], scale["2 processes"]["other_cores"])
            if max(a, b) < 0.25
        ]
        cpu_bound = 2 * _med(scale["1 process"]["cpu_ms"]) / _med(scale["2 processes"]["cpu_ms"])
        lines += [
            "",
            f"2 processes / 1: {_med(two):.2f}× wall-clock — target ≥ {TARGETS['two_procs']}×: "
            f"{_verdict(_med(two) >= TARGETS['two_procs'])}"
            + (f"; in the reps where other load stayed under 0.25 cores: {_span(quiet)}×" if quiet else "")
            + f". CPU per image 2 processes vs 1 gives the ratio on two free cores: {cpu_bound:.2f}×.",
        ]
    if mem:
        lines += [
            "",
            "### Worker peak RSS (fresh process each, make_variants in sequence)",
            "",
            "| run | peak RSS MB per pass | RSS after each pass MB | CPU s user+sys | minor faults | target "
            "| verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        for m in mem:
            target = f"< {m['target_mb']} MB" if m["target_mb"] else "–"
            verdict = _verdict(m["peak_mb"] < m["target_mb"]) if m["target_mb"] else "–"
            lines.append(
                f"| {m['label']} | {' → '.join(str(p['peak_mb']) for p in m['passes'])} | "
                f"{' → '.join(str(p['rss_after_mb']) for p in m['passes'])} | "
                f"{m['user_s']:.1f}+{m['sys_s']:.1f} | {m['minor_faults'] / 1000:.0f} k | {target} | {verdict} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["compare", "scaling", "rss"], action="append")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per benchmark (after a warm-up)")
    parser.add_argument("--rss-passes", type=int, default=3)
    parser.add_argument("--no-thumbor", action="store_true")
    args = parser.parse_args()
    parts = args.only or ["compare", "scaling", "rss"]
    items = corpus.load()
    started = time.perf_counter()
    cmp = scale = mem = None
    if "compare" in parts:
        cmp = compare(items, args.runs, not args.no_thumbor)
        cmp["summary"] = summarize_compare(items, cmp)
    if "scaling" in parts:
        scale = scaling(items, args.runs)
    if "rss" in parts:
        mem = rss(args.rss_passes)
    meta = versions()
    meta["runtime_s"] = round(time.perf_counter() - started)
    raw = OUT / "thumbnails.json"  # a partial run (--only) updates its own parts
    saved = json.loads(raw.read_text()) if raw.exists() else {}
    saved.update({k: v for k, v in {"meta": meta, "compare": cmp, "scaling": scale, "rss": mem}.items() if v})
    raw.write_text(json.dumps(saved))
    print(report(meta, items, cmp, scale, mem))
    print(f"\n(benchmark runtime {meta['runtime_s']} s; raw numbers in bench/out/thumbnails.json)")


if __name__ == "__main__":
    main()
