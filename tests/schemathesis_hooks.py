"""Schemathesis hooks for tests/test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS).

- Every URL a generated create names becomes one on 127.0.0.1, which the URL fetcher refuses before it
  resolves or connects anything: a fuzzed upload by URL is answered like any other, and no traffic leaves
  the machine.
- Every other write goes without ``Prefer: respond-async``, so that its outcome is the answer checked
  against the document, not only the 202 that queued it.
- Every other JSON create is made one that succeeds: a real text file (random base64 is refused as a file
  of no known type) on a target (a random parent_attachment_id names no attachment), so that stored
  attachments come back and their records are checked too.
- An Idempotency-Key is made unique: the generator repeats the same few, and a repeated key replays the
  first answer instead of testing the request.
"""

from __future__ import annotations

import base64
import itertools
import uuid
from typing import Any

import schemathesis

# A tus chunk is raw bytes, as an octet-stream body is.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")

LOOPBACK_URL = "http://127.0.0.1:9/fuzzed"
VALID_UPLOAD = {
    "data": base64.b64encode(b"fuzzed by schemathesis\n").decode(),
    "filename": "fuzzed.txt",
    "target_type": "Fuzz",
    "target_id": "1",
}
# What could make such an upload fail: another source, a link type, a place that does not exist, a size
# that is not the file's.
DROPPED = frozenset({"url", "attachment_type", "parent_attachment_id", "parent_type", "size"})


def on_loopback(body: Any) -> Any:
    """``body`` with every ``url`` value, at any depth, replaced by ``LOOPBACK_URL``."""
    if isinstance(body, dict):
        return {k: LOOPBACK_URL if k == "url" and isinstance(v, str) else on_loopback(v) for k, v in body.items()}
    if isinstance(body, list):
        return [on_loopback(v) for v in body]
    return body


def as_valid_upload(body: Any) -> Any:
    """``body`` (one create or many) with each item made an upload that succeeds, its other fields kept."""
    if isinstance(body, dict) and isinstance(body.get("attachments"), list):
        return {**body, "attachments": [as_valid_upload(item) for item in body["attachments"]]}
    if isinstance(body, dict):
        return {**{k: v for k, v in body.items() if k not in DROPPED}, **VALID_UPLOAD}
    return body


_prefer = itertools.count()
_files = itertools.count()


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.headers and "Prefer" in case.headers and next(_prefer) % 2:
        case.headers = {k: v for k, v in case.headers.items() if k != "Prefer"}
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers = {**case.headers, "Idempotency-Key": str(uuid.uuid4())}
    if isinstance(case.body, (dict, list)):
        case.body = on_loopback(case.body)
        creates = case.operation.method.upper() == "POST" and case.operation.path == "/v1/attachments"
        if creates and case.media_type == "application/json" and next(_files) % 2:
            case.body = as_valid_upload(case.body)
    if case.query and "url" in case.query:
        case.query = on_loopback(case.query)
