"""Every write job answers its waiter: a job that breaks still publishes a ``failed`` outcome.

The ingress waits for ``attachd:outcome:<job id>``. A job that raised would leave it waiting out
ATTACHD_SYNC_WAIT_S and its status URL saying "queued" for good, since arq does not retry a job that
raised anything but ``Retry``. So an unexpected error is retried a few times (a dropped database
connection heals), then reported as an internal error.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from arq import Retry

from services.core import jobs

log = logging.getLogger("attachd.jobs")

MAX_TRIES = 3
INTERNAL_ERROR = {
    "code": "internal_error",
    "status": 500,
    "message": "this could not be done because of a fault on our side; try again",
}

Job = Callable[[dict[str, Any], dict[str, Any]], Awaitable[dict[str, Any]]]


def always_answers(job_function: Job) -> Job:
    @functools.wraps(job_function)
    async def run(ctx: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
        try:
            return await job_function(ctx, job)
        except Exception:
            job_try = ctx.get("job_try", 1)
            if job_try < MAX_TRIES:
                log.warning("%s %s failed; retrying", job_function.__name__, job.get("job_id"), exc_info=True)
                raise Retry(defer=job_try * 2) from None
            log.exception("%s %s failed for good", job_function.__name__, job.get("job_id"))
            await jobs.publish_outcome(ctx["redis"], job["job_id"], {"state": "failed", "error": INTERNAL_ERROR})
            return {"state": "failed"}

    return run
