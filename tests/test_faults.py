"""Fault injection: attachd keeps every upload it accepted through crashes and restarts.

One run (the module fixture ``fault_run``, about three minutes) starts Postgres and Redis of its own, the
ingress, the query service and two workers as separate ``attachd`` processes (restarted whenever they exit,
as Kubernetes would), and uploads a few hundred files through a retrying client while a seeded schedule of
faults hits: workers killed (-9) four times, the ingress killed (-9) and terminated with uploads
mid-stream, a worker terminated with jobs in flight, Redis killed and restarted on its AOF, Postgres
stopped (fast) and started. Then the run settles, one sweeper pass runs, a fresh worker starts, and each
test below checks one promise against what the run left behind.

Every figure of the run is in ``<tmp>/faults*/report.json`` and ``report.md`` (set
``ATTACHD_TEST_FAULTS_REPORT=path.md`` to have the summary written there too), the attachd processes'
logs in ``<tmp>/faults*/logs/``. ``ATTACHD_TEST_FAULTS_SEED`` and ``ATTACHD_TEST_FAULTS_UPLOADS`` change the
schedule and the load. Run only these with ``pytest -m faults``; skip them with ``-m "not faults"``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
from arq.constants import in_progress_key_prefix, job_key_prefix

from services.core import jobs
from services.core.auth import mint_token
from services.core.settings import load_settings
from services.embedded import free_port
from services.ingress.writes import _idempotency_key
from tests.chaos import (
    Chaos,
    Client,
    Exit,
    Fault,
    FileServer,
    Leftovers,
    Postgres,
    RedisServer,
    Supervisor,
    Upload,
    grep_logs,
    inspect,
    job_runs,
    log_incarnations,
    make_corpus,
    schedule,
    server_error,
)
from workers.context import WorkerContext
from workers.sweep import sweep_object_partials, sweep_staging

pytestmark = pytest.mark.faults

SEED = int(os.environ.get("ATTACHD_TEST_FAULTS_SEED", "1729"))
UPLOADS = int(os.environ.get("ATTACHD_TEST_FAULTS_UPLOADS", "300"))
SLOW_UPLOADS = 16
LOAD_S = 75.0  # uploads start over this long; the faults fall within it
SETTLE_S = 60.0  # after the load, how long uploads may still take to finish
CONCURRENCY = 8
STAGING_GRACE_S = 15
SHUTDOWN_GRACE_S = 8
WORKERS = ["worker-1", "worker-2"]
JWT_SECRET = "fault-injection-secret-long-enough-for-hs256"

# What the run sets, besides the engines' URLs; the rest are attachd's defaults (docs/settings.md).
SERVICE_SETTINGS = {
    "ATTACHD_FETCH_ALLOW_CIDRS": "127.0.0.0/8",  # URL uploads come from a server on 127.0.0.1
    "ATTACHD_STAGING_GRACE_S": str(STAGING_GRACE_S),  # so the sweeper acts within the run
    "ATTACHD_SHUTDOWN_GRACE_S": str(SHUTDOWN_GRACE_S),
    "ATTACHD_BYTE_BUDGET": "0",  # one account uploads it all
    "ATTACHD_WORKER_CONCURRENCY": "4",  # 2 cores
    "ATTACHD_SYNC_WAIT_S": "10",
}


@dataclass
class FaultRun:
    tmp: Path
    account: str
    uploads: list[Upload]
    faults: list[Fault]
    exits: list[Exit]
    leftovers: Leftovers
    sweep: dict[str, int]
    # The workers' ATTACHD_TMP_DIR after every worker got SIGTERM, after a fresh one got SIGKILL, and once
    # the next one has started
    worker_tmp: dict[str, list[str]]
    engines: dict[str, Any]
    redis_state: dict[str, dict[str, Any]]  # what Redis held at the end for each upload still pending
    timings: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"<FaultRun of {len(self.uploads)} uploads and {len(self.faults)} faults in {self.tmp}>"

    @property
    def logs(self) -> Path:
        return self.tmp / "logs"

    def where(self) -> str:
        return f"(report: {self.tmp / 'report.json'}, logs: {self.logs})"


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory) -> FaultRun:
    tmp = tmp_path_factory.mktemp("faults")
    run = asyncio.run(_scenario(tmp))
    run.figures = figures(run)
    (tmp / "report.json").write_text(json.dumps(run.figures, indent=2, default=str))
    (tmp / "uploads.json").write_text(json.dumps([u.summary() for u in run.uploads], indent=1, default=str))
    summary = report_markdown(run)
    (tmp / "report.md").write_text(summary)
    if target := os.environ.get("ATTACHD_TEST_FAULTS_REPORT"):
        Path(target).write_text(summary)
    return run


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTACHD_")}
    env.update(PYTHONUNBUFFERED="1", PYTHONUTF8="1", PYTHONIOENCODING="utf-8", ATTACHD_LOG_LEVEL="INFO")
    env.update(SERVICE_SETTINGS)
    env.update(extra)
    return env


async def _scenario(tmp: Path) -> FaultRun:
    t0 = time.monotonic()

    def clock() -> float:
        return time.monotonic() - t0

    timings: dict[str, float] = {}
    logs, storage_root, worker_tmp = tmp / "logs", tmp / "files", tmp / "worker-tmp"
    for d in (logs, storage_root, worker_tmp):
        d.mkdir(parents=True)
    uploads = await asyncio.to_thread(make_corpus, UPLOADS, SLOW_UPLOADS, random.Random(SEED))
    rng = random.Random(SEED + 1)
    faults = schedule(rng, WORKERS, LOAD_S - 5)
    account = f"faults-{SEED}-{os.getpid()}"
    postgres = Postgres(tmp / "pg" / "data")
    redis = RedisServer(tmp / "redis", logs / "redis-server.log")
    supervisor = Supervisor(clock, logs)
    files = FileServer(uploads)
    try:
        database_url = await asyncio.to_thread(postgres.start)
        await asyncio.to_thread(redis.start)
        env = _child_env(
            ATTACHD_DATABASE_URL=database_url,
            ATTACHD_REDIS_URL=redis.url,
            ATTACHD_STORAGE_URL=f"file://{storage_root}",
            ATTACHD_JWT_SECRET=JWT_SECRET,
            ATTACHD_HOST="127.0.0.1",
        )
        await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "services.cli", "migrate"], env=env, check=True, capture_output=True
        )
        ingress = supervisor.add("ingress", "ingress", free_port(), env)
        supervisor.add("query", "query", free_port(), env)
        for name in WORKERS:
            supervisor.add(name, "worker", free_port(), {**env, "ATTACHD_TMP_DIR": str(worker_tmp)})
        await supervisor.start()
        await files.start()
        for name in supervisor.procs:
            await supervisor.wait_started(name)
        engines = {"postgres": await postgres.settings(), "redis": _redis_settings(redis.port)}
        timings["setup"] = clock()

        token = mint_token(JWT_SECRET, account=account, sub="fault-client")
        async with Client(f"http://127.0.0.1:{ingress.port}", token, files, clock, random.Random(SEED + 2)) as client:
            started = clock()
            client.deadline = started + LOAD_S + SETTLE_S
            chaos = Chaos(supervisor, client, redis, postgres, clock)
            chaos_task = asyncio.create_task(chaos.run(faults, started))
            slots, slow_slots = asyncio.Semaphore(CONCURRENCY), asyncio.Semaphore(2)
            normal = [u for u in uploads if not u.slow]
            slow = [u for u in uploads if u.slow]

            async def launch(u: Upload, at: float, sem: asyncio.Semaphore) -> None:
                await asyncio.sleep(max(0.0, started + at - clock()))
                await client.upload(u, sem)

            tasks = [launch(u, i * LOAD_S / len(normal), slots) for i, u in enumerate(normal)]
            tasks += [launch(u, 2 + i * (LOAD_S - 6) / len(slow), slow_slots) for i, u in enumerate(slow)]
            await asyncio.gather(chaos_task, *tasks)
            timings["load_and_settle"] = clock() - started

            # One sweeper pass, once the newest staged byte is older than the grace period.
            last_post = max(u.finished_at or 0 for u in uploads)
            await asyncio.sleep(max(0.0, last_post + STAGING_GRACE_S + 1 - clock()))
            swept = await _sweep_once(database_url, redis.url, storage_root, tmp / "sweeper-tmp")
            if swept["requeued"]:  # the sweeper re-drove jobs Redis had lost: let them finish
                client.deadline = clock() + 30
                await asyncio.gather(*(client.follow(u) for u in uploads if u.upload_id and u.outcome == "pending"))
            timings["sweep"] = clock() - started - timings["load_and_settle"]

        for name in ["ingress", "query", *WORKERS]:
            await supervisor.stop(name)
        # Workers stopped by SIGTERM leave no temp dir; one killed leaves its own, which the next start removes.
        tmp_dirs = {"after_sigterm": sorted(os.listdir(worker_tmp))}
        fresh = WORKERS[0]
        supervisor.resume(fresh)
        await supervisor.wait_started(fresh)
        await supervisor.stop(fresh, sig=signal.SIGKILL)
        tmp_dirs["after_sigkill"] = sorted(os.listdir(worker_tmp))
        supervisor.resume(fresh)
        await supervisor.wait_started(fresh)
        await asyncio.sleep(1)
        tmp_dirs["after_next_start"] = sorted(os.listdir(worker_tmp))
        await supervisor.stop(fresh)
        leftovers = await inspect(database_url, account, storage_root)
        pending = [u for u in uploads if u.upload_id and u.outcome == "pending"]
        redis_state = await asyncio.to_thread(_redis_state, redis.port, account, pending)
        timings["total"] = clock()
        return FaultRun(
            tmp=tmp,
            account=account,
            uploads=uploads,
            faults=faults,
            exits=supervisor.exits,
            leftovers=leftovers,
            sweep=swept,
            worker_tmp=tmp_dirs,
            engines=engines,
            redis_state=redis_state,
            timings=timings,
        )
    finally:
        await supervisor.close()
        await files.close()
        redis.stop()
        await asyncio.to_thread(postgres.stop)


def _redis_state(port: int, account: str, uploads: list[Upload]) -> dict[str, dict[str, Any]]:
    client = redis_sync.Redis(port=port, decode_responses=True)
    try:
        state = {}
        for u in uploads:
            job_id = u.upload_id
            assert job_id is not None
            in_progress_ms = client.pttl(in_progress_key_prefix + job_id)
            state[job_id] = {
                "idempotency_key_bound_to": client.get(_idempotency_key(account, f"POST /v1/attachments {u.key}")),
                "owner_key": bool(client.exists(jobs.owner_key(job_id))),
                "arq_job": bool(client.exists(job_key_prefix + job_id)),
                "queued": client.zscore(jobs.QUEUE, job_id) is not None,
                "arq_in_progress_ttl_s": round(in_progress_ms / 1000) if in_progress_ms > 0 else None,
                "outcome": bool(client.exists(jobs.outcome_key(job_id))),
            }
        return state
    finally:
        client.close()


def _redis_settings(port: int) -> dict[str, str]:
    client = redis_sync.Redis(port=port, decode_responses=True)
    try:
        found = {"redis_version": client.info("server")["redis_version"]}
        for name in ("appendonly", "appendfsync", "save"):
            found.update(client.config_get(name))
        return found
    finally:
        client.close()


async def _sweep_once(database_url: str, redis_url: str, storage_root: Path, tmp_dir: Path) -> dict[str, int]:
    settings = load_settings(
        {},
        tmp_dir=str(tmp_dir),
        database_url=database_url,
        redis_url=redis_url,
        storage_url=f"file://{storage_root}",
        jwt_secret=JWT_SECRET,
        staging_grace_s=STAGING_GRACE_S,
    )
    wctx = await WorkerContext.open(settings)
    redis = await jobs.connect(redis_url)
    try:
        ctx = {"attachd": wctx, "redis": redis}
        swept = await sweep_staging(ctx)
        swept["object_partials_removed"] = await sweep_object_partials(ctx)
        return swept
    finally:
        await redis.aclose()
        await wctx.close()


# -- the figures -----------------------------------------------------------------------------------------


def _expected_keys(row: Any) -> dict[str, int | None]:
    """The object keys a row needs, with their sizes."""
    keys: dict[str, int | None] = {}
    if row["storage_key"]:
        keys[row["storage_key"]] = row["size"]
    for variant in (json.loads(row["variants"]) if row["variants"] else {}).values():
        keys[variant["key"]] = variant["size"]
    return keys


def _row_problems(u: Upload, row: Any, files: dict[str, int]) -> list[str]:
    problems = []
    if row["sha256"] != u.sha256 or row["size"] != len(u.body):
        problems.append("the row's sha256 or size is not the upload's")
    variants = json.loads(row["variants"]) if row["variants"] else None
    if u.image and not (variants and {"thumbnail", "small"} <= set(variants)):
        problems.append(f"an image without its variants: {variants}")
    for key, size in _expected_keys(row).items():
        if files.get(key) != size:
            problems.append(f"{key}: stored {files.get(key)} bytes, the row says {size}")
    return problems


def figures(run: FaultRun) -> dict[str, Any]:
    uploads, left = run.uploads, run.leftovers
    rows_by_id = {str(r["id"]): r for r in left.rows}
    by_sha = {u.sha256: u for u in uploads}
    acked = [u for u in uploads if u.upload_id is not None]
    incarnations = log_incarnations(run.logs)

    lost, wrong = [], []
    for u in uploads:
        if u.outcome == "committed":
            row = rows_by_id.get(u.upload_id or "")
            if row is None:
                lost.append({**u.summary(), "why": "answered committed, but no row has its id"})
            elif problems := _row_problems(u, row, left.files):
                wrong.append({**u.summary(), "why": problems})
            elif not u.valid:
                wrong.append({**u.summary(), "why": "committed, but the worker should have refused it"})
        elif u.outcome == "failed":
            if not (u.error and u.error.get("code") and u.error.get("message")):
                wrong.append({**u.summary(), "why": "failed without a reason"})
            elif u.valid:
                wrong.append({**u.summary(), "why": "a valid upload was reported failed"})
            elif u.error.get("code") != "content_mismatch":
                wrong.append({**u.summary(), "why": "refused, but not for its content"})
        elif u.upload_id is not None:  # acknowledged, never final
            lost.append({**u.summary(), "why": f"acknowledged ({u.acked_with}) but still {u.outcome} at the end"})
    ended = {
        f"{e.name} #{e.incarnation}": f"{'asked' if e.requested else 'on its own'} at t={e.at:.1f}, rc {e.returncode}"
        for e in run.exits
    }
    for item in lost:
        job_id = item["upload_id"]
        item["ran_on"] = {
            who: f"{marks} (the process ended {ended.get(who, 'never: still running')})"
            for who, marks in job_runs(incarnations, job_id).items()
        }
        item["redis"] = run.redis_state.get(job_id)
        item["evidence"] = grep_logs(incarnations, job_id)

    rows_per_sha = Counter(bytes(r["sha256"]) for r in left.rows if r["sha256"] is not None)
    duplicate_rows = [
        {
            **(by_sha[sha].summary() if sha in by_sha else {"upload": "unknown"}),
            "rows": {
                str(r["id"]): {"created_at": str(r["created_at"]), "evidence": grep_logs(incarnations, str(r["id"]))}
                for r in left.rows
                if r["sha256"] == sha
            },
        }
        for sha, n in rows_per_sha.items()
        if n > 1
    ]
    stray_rows = [str(r["id"]) for r in left.rows if bytes(r["sha256"] or b"") not in by_sha]
    answered_ids = {u.upload_id for u in uploads if u.outcome == "committed"}
    unacknowledged_rows = [str(r["id"]) for r in left.rows if str(r["id"]) not in answered_ids]

    per_event = Counter((str(e["attachment_id"]), e["event_type"]) for e in left.events)
    duplicate_events = [{"attachment_id": a, "type": t, "events": n} for (a, t), n in per_event.items() if n > 1]
    unannounced = [i for i in rows_by_id if per_event[(i, "attachment.created")] == 0]
    unpublished = sum(1 for e in left.events if e["published_at"] is None)

    needed: dict[str, str] = {}
    for row in left.rows:
        for key in _expected_keys(row):
            needed[key] = str(row["id"])
    part_files = sorted(p for p in left.files if Path(p).name.startswith(".part-"))
    orphans = sorted(p for p in left.files if p.startswith("objects/") and p not in needed and p not in part_files)
    staging = sorted(p for p in left.files if p.startswith("staging/"))

    survived = [e for e in run.worker_tmp["after_next_start"] if e in run.worker_tmp["after_sigkill"]]
    requested = [e for e in run.exits if e.requested]
    on_their_own = [e for e in run.exits if not e.requested and e.had_started]
    failed_starts = [e for e in run.exits if not e.requested and not e.had_started]

    tries = Counter(answer for u in uploads for _, answer in u.tries)
    polls = Counter(answer for u in uploads for _, answer in u.polls)
    final_not_4xx = [
        {**u.summary(), "why": "gave up: no answer but connection errors and 5xx"}
        for u in uploads
        if u.outcome == "gave_up"
    ] + [{**u.summary(), "why": "failed with a server error"} for u in uploads if server_error(u.error)]
    recovered = [u for u in uploads if any(a.startswith(("5", "conn")) for _, a in u.tries) and u.outcome != "gave_up"]

    return {
        "seed": SEED,
        "timings_s": {k: round(v, 1) for k, v in run.timings.items()},
        "engines": run.engines,
        "attachd_settings": SERVICE_SETTINGS,
        "uploads": {
            "total": len(uploads),
            "by_kind": dict(Counter(("slow multipart" if u.slow else u.kind) for u in uploads)),
            "respond_async": sum(u.respond_async for u in uploads),
            "meant_to_be_refused": sum(not u.valid for u in uploads),
            "acknowledged": len(acked),
            "committed": sum(u.outcome == "committed" for u in uploads),
            "failed": sum(u.outcome == "failed" for u in uploads),
            "pending_at_the_end": sum(u.outcome == "pending" for u in uploads),
            "gave_up": sum(u.outcome == "gave_up" for u in uploads),
        },
        "faults": [f.summary() for f in run.faults],
        "process_exits": {
            "requested": len(requested),
            "on_their_own": [_exit_summary(e) for e in on_their_own],
            "failed_starts": [_exit_summary(e) for e in failed_starts],
        },
        "lost": lost,
        "wrong": wrong,
        "duplicate_rows": duplicate_rows,
        "stray_rows": stray_rows,
        "rows_never_answered_committed": len(unacknowledged_rows),
        "duplicate_events": duplicate_events,
        "rows_without_created_event": unannounced,
        "unpublished_events": unpublished,
        "sweep": run.sweep,
        "orphaned_objects": orphans,
        "staging_left": staging,
        "part_files": part_files,
        "empty_dirs_left": len(run.leftovers.empty_dirs),
        "worker_tmp": run.worker_tmp,
        "worker_tmp_survivors": survived,
        "client": {
            "post_answers": dict(tries),
            "poll_answers_not_200": dict(polls),
            "uploads_that_recovered_from_5xx_or_connection_errors": len(recovered),
            "uploads_posted_again_after_their_job_failed_on_our_side": sum(bool(u.earlier) for u in uploads),
            "final_errors_not_4xx": final_not_4xx,
        },
    }


def _exit_summary(e: Exit) -> dict[str, Any]:
    return {"process": f"{e.name} #{e.incarnation}", "at": round(e.at, 1), "returncode": e.returncode, "log": e.tail}


def report_markdown(run: FaultRun) -> str:
    f = run.figures
    up = f["uploads"]
    lines = [
        f"Seed {f['seed']}; {up['total']} uploads ({', '.join(f'{n} {k}' for k, n in up['by_kind'].items())};"
        f" {up['respond_async']} with `Prefer: respond-async`; {up['meant_to_be_refused']} meant to be refused);"
        f" {len(f['faults'])} faults; timings {f['timings_s']}.",
        "",
        "| figure | count |",
        "|---|---|",
        f"| uploads acknowledged (201/202) | {up['acknowledged']} |",
        f"| committed | {up['committed']} |",
        f"| failed with a reason | {up['failed']} |",
        f"| lost (acknowledged, never final or no row) | {len(f['lost'])} |",
        f"| wrong (bad row, missing variants, valid upload failed) | {len(f['wrong'])} |",
        f"| client gave up (no answer but errors) | {up['gave_up']} |",
        f"| duplicate rows | {len(f['duplicate_rows'])} |",
        f"| duplicate outbox events | {len(f['duplicate_events'])} |",
        f"| rows without their `attachment.created` event | {len(f['rows_without_created_event'])} |",
        f"| orphaned objects after one sweep | {len(f['orphaned_objects'])} |",
        f"| staging files after one sweep | {len(f['staging_left'])} |",
        f"| `.part-` temp files | {len(f['part_files'])} |",
        f"| worker temp entries left after SIGTERM / surviving the start after a SIGKILL | "
        f"{len(f['worker_tmp']['after_sigterm'])} / {len(f['worker_tmp_survivors'])} |",
        f"| final client errors that are not 4xx | {len(f['client']['final_errors_not_4xx'])} |",
        f"| uploads that recovered from 5xx/connection errors | "
        f"{f['client']['uploads_that_recovered_from_5xx_or_connection_errors']} |",
        f"| process exits asked for / on their own / failed starts | {f['process_exits']['requested']} / "
        f"{len(f['process_exits']['on_their_own'])} / {len(f['process_exits']['failed_starts'])} |",
        "",
        "| t (s) | fault | detail |",
        "|---|---|---|",
        *(f"| {x['at']} | {x['fault']} | {x['detail']} |" for x in f["faults"]),
        "",
    ]
    return "\n".join(lines)


def _examples(items: list[Any], n: int = 8) -> str:
    return json.dumps(items[:n], indent=1, default=str)


# -- the checks -------------------------------------------------------------------------------------------


def test_every_accepted_upload_is_committed_with_its_variants_or_failed_with_a_reason(fault_run):
    f = fault_run.figures
    assert not f["lost"], (
        f"{len(f['lost'])} of {f['uploads']['acknowledged']} acknowledged uploads were lost "
        f"{fault_run.where()}:\n{_examples(f['lost'])}"
    )
    assert not f["wrong"], f"{len(f['wrong'])} uploads ended wrong {fault_run.where()}:\n{_examples(f['wrong'])}"


def test_no_upload_is_committed_twice(fault_run):
    f = fault_run.figures
    assert not f["duplicate_rows"], (
        f"{len(f['duplicate_rows'])} uploads have more than one row {fault_run.where()}:\n"
        f"{_examples(f['duplicate_rows'])}"
    )
    assert not f["stray_rows"], f"rows that match no upload: {f['stray_rows'][:10]}"


def test_every_row_has_exactly_one_created_event(fault_run):
    f = fault_run.figures
    assert not f["duplicate_events"], (
        f"{len(f['duplicate_events'])} duplicate outbox events {fault_run.where()}:\n{_examples(f['duplicate_events'])}"
    )
    assert not f["rows_without_created_event"], (
        f"{len(f['rows_without_created_event'])} rows have no attachment.created event: "
        f"{f['rows_without_created_event'][:10]}"
    )


def test_no_orphaned_objects_after_one_sweep(fault_run):
    f = fault_run.figures
    assert not f["orphaned_objects"], (
        f"{len(f['orphaned_objects'])} stored objects belong to no row after the sweep {f['sweep']} "
        f"{fault_run.where()}:\n{_examples(f['orphaned_objects'], 20)}"
    )


def test_no_staging_left_after_one_sweep(fault_run):
    f = fault_run.figures
    stuck = {u.upload_id for u in fault_run.uploads if u.outcome == "pending" and u.upload_id}
    of_pending = [p for p in f["staging_left"] if p.split("/")[1] in stuck]
    assert not f["staging_left"], (
        f"{len(f['staging_left'])} staging files left after the sweep {f['sweep']} ({len(of_pending)} of uploads "
        f"still pending) {fault_run.where()}:\n{_examples(f['staging_left'], 20)}"
    )


def test_no_part_files_left(fault_run):
    f = fault_run.figures
    assert not f["part_files"], (
        f"{len(f['part_files'])} .part- temp files left in storage {fault_run.where()}:\n"
        f"{_examples(f['part_files'], 20)}"
    )


def test_workers_leave_no_temp_files_behind(fault_run):
    tmp = fault_run.figures["worker_tmp"]
    assert not tmp["after_sigterm"], (
        f"workers stopped by SIGTERM left {tmp['after_sigterm']} in their temp dir {fault_run.where()}"
    )
    assert tmp["after_sigkill"], "the harness killed a worker, but it had no temp dir to leave behind"
    survivors = fault_run.figures["worker_tmp_survivors"]
    assert not survivors, (
        f"the next worker's start left what a killed worker had in its temp dir: {survivors} {fault_run.where()}"
    )


def test_every_error_a_client_is_left_with_is_a_4xx(fault_run):
    f = fault_run.figures
    final = f["client"]["final_errors_not_4xx"]
    assert not final, (
        f"{len(final)} uploads ended on an error that is not a 4xx (answers seen: {f['client']['post_answers']}) "
        f"{fault_run.where()}:\n{_examples(final)}"
    )


def test_no_attachd_process_exits_on_its_own(fault_run):
    exits = fault_run.figures["process_exits"]["on_their_own"]
    assert not exits, (
        f"{len(exits)} attachd processes exited without being asked to (Kubernetes would restart them) "
        f"{fault_run.where()}:\n" + "\n".join(f"{e['process']} at {e['at']} s: rc {e['returncode']}" for e in exits)
    )
