"""The metrics behind the dashboard and the alerts: each one exported, each counting what it says; and every
metric the dashboard and the alert rules name exists after a smoke run."""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from services.core import budget
from services.core.budget import ByteBudget
from services.core.settings import Settings
from tests.conftest import jpeg_bytes
from tests.test_uploads import multipart
from workers import metrics

OBSERVABILITY = Path(__file__).parent.parent / "deploy" / "observability"
DASHBOARD = OBSERVABILITY / "grafana-dashboard.json"
ALERTS = OBSERVABILITY / "alerts.yaml"
METRIC = re.compile(r"\battachd_[a-z0-9_]+")
SELECTOR = re.compile(r"\b(attachd_[a-z0-9_]+)\{([^}]*)\}")
BY = re.compile(r"\bby \(([^)]*)\)")


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())]


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def exported(text: str) -> dict[str, set[str]]:
    """Each series name /metrics exposes, with the label names it has."""
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def smoke_run(service, remote) -> str:
    """An upload committed, one refused, a URL fetch that fails; then the app's /metrics, as scraped."""
    auth = service.auth()
    resp = await service.client.post(
        "/v1/attachments",
        headers=auth,
        data=multipart(("p.jpg", jpeg_bytes(320, 240), "image/jpeg"), target_type="Task", target_id="1"),
    )
    assert resp.status == 201, await resp.text()
    resp = await service.client.post(
        "/v1/attachments", headers=auth, data=multipart(("e.txt", b"", "text/plain"), target_type="Task", target_id="1")
    )
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "empty_file"
    resp = await service.upload_json({"target_type": "Task", "target_id": "1", "url": remote.url("/missing.jpg")})
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "fetch_failed"
    resp = await service.client.get("/metrics")
    assert resp.status == 200
    return await resp.text()


async def test_every_metric_of_the_dashboard_and_the_alerts_exists_after_a_smoke_run(service, remote):
    series = exported(await smoke_run(service, remote))
    exprs = dashboard_exprs() + [rule["expr"] for rule in alert_rules()]
    named = {name for expr in exprs for name in METRIC.findall(expr)}
    assert len(named) >= 12
    assert named - set(series) == set(), "named by the dashboard or the alerts, exported by nothing"
    for expr in exprs:  # the labels they select on and group by are the metrics' own
        for name, selector in SELECTOR.findall(expr):
            used = {part.split("=")[0].strip().rstrip("!~") for part in selector.split(",") if part.strip()}
            assert used - {"job"} <= series[name], (expr, name)
        labels = set().union(*(series[name] for name in METRIC.findall(expr)))
        for group in BY.findall(expr):
            assert {label.strip() for label in group.split(",")} <= labels | {"le"}, expr


def test_the_dashboard_and_the_alert_rules_are_well_formed():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] == "attachd"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}", panel["title"]
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["labels"]["severity"] in ("info", "warning", "critical") and rule["annotations"]["summary"]
        assert rule["expr"].count("(") == rule["expr"].count(")")
    covered = " ".join(rule["expr"] for rule in rules)
    for metric in (
        "attachd_queue_oldest_age_seconds",
        "attachd_jobs_total",
        "attachd_http_requests_total",
        "attachd_outbox_lag_seconds",
        "attachd_redis_aof",
    ):
        assert metric in covered, f"no alert on {metric}"


async def test_jobs_are_counted_and_timed_by_function_and_result(service, remote):
    before = {r: sample("attachd_jobs_total", function="ingest", result=r) for r in metrics.RESULTS}
    timed = sample("attachd_job_seconds_count", function="ingest")
    fetches = sample("attachd_fetch_failures_total", reason="fetch_failed")
    copies = sample("attachd_storage_seconds_count", backend="file", operation="copy")
    await smoke_run(service, remote)
    grown = {r: sample("attachd_jobs_total", function="ingest", result=r) - before[r] for r in metrics.RESULTS}
    # the upload, and the two refused: an empty file and a URL that answered 404
    assert grown == {"committed": 1, "refused": 2, "failed": 0, "retried": 0, "invalid": 0}
    assert sample("attachd_job_seconds_count", function="ingest") - timed == 3
    assert sample("attachd_fetch_failures_total", reason="fetch_failed") - fetches == 1
    assert sample("attachd_storage_seconds_count", backend="file", operation="copy") - copies >= 1


async def test_budget_refusals_are_counted_by_kind(redis_url):
    redis = aioredis.from_url(redis_url)
    gate, account = ByteBudget(redis), f"acct-{uuid.uuid4().hex[:8]}"
    settings = Settings(byte_budget=100, byte_budget_window_s=60, byte_budget_lockout_s=0, max_file_bytes=50)
    before = {kind: sample("attachd_budget_refusals_total", kind=kind) for kind in budget.REFUSAL_KINDS}
    try:
        for nbytes, file_bytes, refusal in (
            (80, 80, budget.FileTooLarge),
            (500, None, budget.NeverFits),
            (None, None, Exception),  # 411: no length while a budget applies
        ):
            with pytest.raises(refusal):
                await gate.admit(settings, account, uuid.uuid4().hex, nbytes, file_bytes=file_bytes)
        await gate.admit(settings, account, "fits", 90)
        with pytest.raises(budget.BudgetExceeded):
            await gate.admit(settings, account, "over", 20)
    finally:
        await redis.aclose()
    grown = {kind: sample("attachd_budget_refusals_total", kind=kind) - before[kind] for kind in budget.REFUSAL_KINDS}
    assert grown == {"budget_exceeded": 1, "never_fits": 1, "file_too_large": 1, "length_required": 1}


async def test_queue_depth_counts_due_jobs_and_age_is_the_oldest_ones(redis_url):
    redis = aioredis.from_url(redis_url)
    queue = f"attachd:test-queue:{uuid.uuid4().hex[:8]}"
    now_ms = time.time() * 1000
    try:
        await metrics.refresh_queue(redis, queue)
        assert (sample("attachd_queue_depth"), sample("attachd_queue_oldest_age_seconds")) == (0, 0)
        # two jobs due (30 s and 1 s ago) and a retry deferred by a minute: not due yet
        await redis.zadd(queue, {"a": now_ms - 30_000, "b": now_ms - 1_000, "c": now_ms + 60_000})
        await metrics.refresh_queue(redis, queue)
        assert sample("attachd_queue_depth") == 2
        assert 30 <= sample("attachd_queue_oldest_age_seconds") < 40
    finally:
        await redis.delete(queue)
        await redis.aclose()


class OneConnection:
    """A pool of one connection, inside the test's transaction."""

    def __init__(self, conn) -> None:
        self.conn = conn

    @contextlib.asynccontextmanager
    async def acquire(self):
        yield self.conn


async def test_outbox_lag_is_the_age_of_the_oldest_unrelayed_event(db):
    async with db.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:  # rolled back: nothing of this stays, and no other test's event is touched
            await conn.execute("UPDATE outbox SET published_at = now() WHERE published_at IS NULL")
            await metrics.refresh_outbox(OneConnection(conn))
            assert sample("attachd_outbox_lag_seconds") == 0
            await conn.execute(
                "INSERT INTO outbox (account_id, event_type, payload, created_at) "
                "VALUES ('lag', 'test.lag', '{}'::jsonb, now() - interval '100 seconds')"
            )
            await metrics.refresh_outbox(OneConnection(conn))
            assert sample("attachd_outbox_lag_seconds") == pytest.approx(100, abs=1)
        finally:
            await transaction.rollback()


async def test_storage_reads_are_timed_to_their_first_chunk_and_closed(tmp_path):
    from services.core.storage import open_storage

    store = await open_storage(f"file://{tmp_path}")
    before = sample("attachd_storage_seconds_count", backend="file", operation="read")
    await store.put_bytes("objects/a/1/original", b"x" * 3_000_000)
    chunks = store.read("objects/a/1/original")
    first = await anext(chunks)
    await chunks.aclose()  # a client that left after the first chunk
    assert first and sample("attachd_storage_seconds_count", backend="file", operation="read") - before == 1
    assert store.local_path("objects/a/1/original") is not None
    await store.close()
