"""Schemathesis hooks for tests/test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS).

- Every URL a generated create names becomes one on 127.0.0.1, which the URL fetcher refuses before it
  resolves or connects anything: a fuzzed upload by URL is answered like any other, and no traffic leaves
  the machine.
- Every other write goes without ``Prefer: respond-async``, so that its outcome is the answer checked
  against the document, not only the 202 that queued it.
- Every other JSON create carries a real text file (random base64 is refused as a file of no known type),
  so that stored attachments come back, and their records are checked too.
"""

from __future__ import annotations

import base64
import itertools
from typing import Any

import schemathesis

LOOPBACK_URL = "http://127.0.0.1:9/fuzzed"
TEXT_FILE = {"data": base64.b64encode(b"fuzzed by schemathesis\n").decode(), "filename": "fuzzed.txt"}


def on_loopback(body: Any) -> Any:
    """``body`` with every ``url`` value, at any depth, replaced by ``LOOPBACK_URL``."""
    if isinstance(body, dict):
        return {k: LOOPBACK_URL if k == "url" and isinstance(v, str) else on_loopback(v) for k, v in body.items()}
    if isinstance(body, list):
        return [on_loopback(v) for v in body]
    return body


def with_text_files(body: Any) -> Any:
    """``body`` with each item that carries data carrying the text file instead."""
    if isinstance(body, dict) and isinstance(body.get("attachments"), list):
        return {**body, "attachments": [with_text_files(item) for item in body["attachments"]]}
    if isinstance(body, dict) and isinstance(body.get("data"), str):
        return {**body, **TEXT_FILE}
    return body


_prefer = itertools.count()
_files = itertools.count()


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.headers and "Prefer" in case.headers and next(_prefer) % 2:
        case.headers = {k: v for k, v in case.headers.items() if k != "Prefer"}
    if isinstance(case.body, (dict, list)):
        case.body = on_loopback(case.body)
        if case.media_type == "application/json" and next(_files) % 2:
            case.body = with_text_files(case.body)
    if case.query and "url" in case.query:
        case.query = on_loopback(case.query)
