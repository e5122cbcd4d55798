"""The data-access layer: every SQL statement of attachd, by aggregate.

- ``attachments``: insert, read, list and query, change, cancel, versions, the purge of unlinked uploads;
- ``targets``: the target hierarchy and the links of uploads to targets;
- ``events``: the outbox (written with every change, read by the relay) and upload sessions;
- ``counters``: counts, from the live counters or ``count(*)``.

Handlers and jobs call these functions and hold no SQL of their own: those of attachments, events and
counters through this package (``repository.get_attachment(...)``), the hierarchy's as ``targets``
(``from services.core.repository import targets``). The functions take a connection (or a pool) and
open no transactions: the caller owns the transaction and writes its events last in it (see
``events.write_event``).
"""

from services.core.repository import attachments, counters, events, targets
from services.core.repository.attachments import (
    INSERT_COLUMNS,
    ListFilter,
    QueryFilter,
    Where,
    announce_created,
    attachments_of_upload,
    cancel_attachment,
    delete_unlinked,
    get_attachment,
    get_attachments,
    get_for_download,
    insert_attachment,
    list_attachments,
    list_where,
    next_version,
    query_attachments,
    query_where,
    resolve_ref,
    seqs_of,
    unlinked_uploads,
    update_attachment,
)
from services.core.repository.counters import count_attachments, count_live_on_target, count_query, counter_sql
from services.core.repository.events import (
    SESSION_CLOSED,
    close_upload_session,
    get_upload_session,
    idle_sessions,
    job_already_applied,
    job_wrote_event,
    last_published_seq,
    mark_published,
    session_attachments,
    touch_upload_session,
    try_lock_relay,
    unpublish_after,
    unpublished_events,
    write_event,
)

__all__ = [
    "INSERT_COLUMNS",
    "SESSION_CLOSED",
    "ListFilter",
    "QueryFilter",
    "Where",
    "announce_created",
    "attachments",
    "attachments_of_upload",
    "cancel_attachment",
    "close_upload_session",
    "count_attachments",
    "count_live_on_target",
    "count_query",
    "counter_sql",
    "counters",
    "delete_unlinked",
    "events",
    "get_attachment",
    "get_attachments",
    "get_for_download",
    "get_upload_session",
    "idle_sessions",
    "insert_attachment",
    "job_already_applied",
    "job_wrote_event",
    "last_published_seq",
    "list_attachments",
    "list_where",
    "mark_published",
    "next_version",
    "query_attachments",
    "query_where",
    "resolve_ref",
    "seqs_of",
    "session_attachments",
    "targets",
    "touch_upload_session",
    "try_lock_relay",
    "unlinked_uploads",
    "unpublish_after",
    "unpublished_events",
    "update_attachment",
    "write_event",
]
