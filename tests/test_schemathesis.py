"""Schemathesis fuzzes `attachd dev` from its own /v1/openapi.json: every operation, with generated and
boundary data and linked sequences (create, then read, change, delete what was made), on a bounded budget.
No answer may be a 5xx, and every answer must match the document: its status, content type, headers and body.

Its traffic stays on 127.0.0.1: the service listens there, and tests/schemathesis_hooks.py points every
generated URL at a loopback address, which the URL fetcher refuses without resolving or connecting.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from services.embedded import free_port
from tests.test_cli import ATTACHD, wait_ready

ROOT = Path(__file__).resolve().parent.parent
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
# The budget: examples per operation and phase. A fixed seed makes a failure reproducible; set
# ATTACHD_TEST_FUZZ_SEED to explore further (and ATTACHD_TEST_FUZZ_EXAMPLES for a longer run).
EXAMPLES = os.environ.get("ATTACHD_TEST_FUZZ_EXAMPLES", "8")
SEED = os.environ.get("ATTACHD_TEST_FUZZ_SEED", "20240501")


def token_in(log: Path, proc: subprocess.Popen, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if match := re.search(r"^export ATTACHD_TOKEN=(\S+)$", log.read_text(), re.M):
            return match[1]
        time.sleep(0.2)
    raise AssertionError("attachd dev printed no token:\n" + log.read_text()[-3000:])


@pytest.fixture
def attachd_dev(tmp_path):
    """`attachd dev` on a free port of 127.0.0.1: its base URL and the token it prints. Its output goes to a
    file, which nothing has to keep reading for it to go on."""
    port = free_port()
    log = tmp_path / "dev.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*ATTACHD, "dev", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(tmp_path / "dev")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ATTACHD_FETCH_ALLOW_CIDRS": ""},  # loopback stays refused to the URL fetcher
            start_new_session=True,
        )
    try:
        yield f"http://127.0.0.1:{port}", token_in(log, proc)
    finally:
        proc.terminate()
        proc.wait(60)


def documented_operations() -> list[tuple[str, str]]:
    from tests.test_openapi import documented

    return sorted((method, path) for _, method, path in documented())


def server_errors(metrics: str) -> list[str]:
    return [line for line in metrics.splitlines() if re.match(r'attachd_http_requests_total\{.*status="5', line)]


async def test_schemathesis_finds_no_server_error_and_no_answer_off_the_document(attachd_dev, tmp_path):
    base, token = attachd_dev
    await wait_ready(f"{base}/readyz")
    report = tmp_path / "report.json"
    run = subprocess.run(
        [
            SCHEMATHESIS,
            "run",
            f"{base}/v1/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            ",".join(CHECKS),
            "--phases",
            "coverage,fuzzing,stateful",
            "--max-examples",
            EXAMPLES,
            "--seed",
            SEED,
            "--workers",
            "1",
            "--request-timeout",
            "40",
            "--report",
            "json",
            "--report-json-path",
            str(report),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-3000:]
    summary = json.loads(report.read_text())
    assert summary["operations"]["tested"] == summary["operations"]["total"] == len(documented_operations())
    assert summary["failures"] == [] and summary["errors"] == []
    assert summary["test_cases"]["generated"] > 1000
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/metrics") as resp:
            metrics = await resp.text()
        async with http.get(
            f"{base}/v1/attachments/count?include_canceled=true", headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            stored = (await resp.json())["count"]
    assert server_errors(metrics) == []
    # It went deep enough to store attachments (and so to check their records), not only to be refused.
    assert stored > 0
    requests = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("attachd_http_requests_total{") and 'route="/v1/' in line
    )
    assert requests > 500
