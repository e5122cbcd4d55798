"""The job contract, version 1: what writers put on the queue, what workers answer, what events say.

The ingress, the workers and internal services share these types. A job is a
Struct, carried by arq as JSON; a worker decodes it back into the same Struct
(types and per-field rules checked by msgspec) before it does anything, and a
job it cannot decode, or of another version, fails with a clear outcome.
``workers/contract.schema.json`` is generated from here (``python -m
services.core.contract``) for producers and consumers that are not Python.
Cross-field rules of a create request (one source, targets in pairs, ...) are
``services.core.validation.check_new_attachment``, run by both sides.
"""

from __future__ import annotations

import datetime as dt
import sys
import uuid
from typing import Annotated, Any, Literal, TypeAlias

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from services.core import storage
from services.core.fields import FIELDS

CONTRACT_VERSION = 1

INT32 = 2**31 - 1
_NO_CONTROL = r"^[^\x00-\x1f]*$"
_TYPE_NAME = r"^[A-Za-z][A-Za-z0-9_:.\-]*$"


def _limits(name: str, pattern: str = _NO_CONTROL) -> Meta:
    """A text field's rules: the catalogue's length, no control characters (or ``pattern``)."""
    return Meta(max_length=FIELDS[name].max_length, pattern=pattern)


TargetType = Annotated[str, _limits("target_type", _TYPE_NAME)]
TargetId = Annotated[str, _limits("target_id")]
FieldName = Annotated[str, _limits("field")]
Name = Annotated[str, _limits("name")]
ContentType = Annotated[str, _limits("content_type")]
Int32 = Annotated[int, Meta(ge=-INT32, le=INT32)]
Text255 = Annotated[str, Meta(max_length=255, pattern=_NO_CONTROL)]
# An attachment's integer id (the ``seq`` column, a bigint identity).
Seq = Annotated[int, Meta(ge=1, le=2**63 - 1)]
# An attachment named by its id (a UUID) or its integer id (``seq``); a worker resolves it within the job's
# account, so another account's attachment is as unknown as one that never existed.
AttachmentRef: TypeAlias = uuid.UUID | Seq
# The picklists of services/core/fields.py (a test keeps them equal).
AttachmentType = Literal["FILE_LINK", "FOLDER_LINK", "URL", "FILE_ATTACHMENT"]
Status = Literal["approved", "pending", "required"]
CreatedFrom = Literal["task_panel", "rework", "feedback", "api"]
Publish = Literal["all", "internal"]
ActorType = Literal["User", "Application", "Contact", "Resource"]
Mode = Literal["atomic", "partial"]


class Actor(Struct, frozen=True, forbid_unknown_fields=True):
    """Who asked for the write: the token's subject, or the internal service."""

    type: ActorType = "User"
    id: Text255 | None = None


class TargetRef(Struct, frozen=True, forbid_unknown_fields=True):
    """A record attachments hang on, such as ``{"type": "Ticket", "id": "42"}``."""

    type: TargetType
    id: TargetId


class NewAttachment(Struct, kw_only=True, forbid_unknown_fields=True):
    """The create fields of one attachment (the API's names), validated; absent fields take the API's defaults."""

    target_type: TargetType | None = None
    target_id: TargetId | None = None
    field: FieldName | None = None
    parent_type: TargetType | None = None
    attachment_type: AttachmentType = "FILE_ATTACHMENT"
    name: Name | None = None  # None: the worker names it after the file
    filename: str | None = None  # sanitized by the worker
    content_type: ContentType | None = None  # as declared; the worker sniffs the real one
    # http(s) (fetched, or a URL link); a FILE_LINK or FOLDER_LINK may also be a file:// URL or a UNC path
    url: Annotated[str, Meta(pattern=r"(?i)^(?:https?://|file://|\\\\)[^\x00-\x1f]*$")] | None = None
    display_order: Int32 = 0
    available: bool = True
    status: Status | None = None
    created_from: CreatedFrom = "api"
    publish: Publish = "all"
    parent_attachment_id: AttachmentRef | None = None  # nest under this attachment
    version_of: AttachmentRef | None = None  # be the next version of this attachment
    session_token: Text255 | None = None
    impersonator_id: Text255 | None = None
    declared_size: Annotated[int, Meta(ge=0)] | None = msgspec.field(default=None, name="size")
    parent: TargetRef | None = None  # where the target sits in the hierarchy


class ErrorInfo(Struct, kw_only=True, omit_defaults=True):
    """The API's error shape plus the HTTP status it answers with."""

    code: str
    message: str
    status: int = 400
    field: str | None = None
    extra: dict[str, Any] = {}


class ItemError(ErrorInfo, kw_only=True):
    """One refused file of a many-file upload."""

    index: int
    filename: str | None = None


# Where an ingest item's bytes are, tagged by "kind".
class Base64Source(Struct, tag_field="kind", tag="base64", frozen=True, forbid_unknown_fields=True):
    """Base64 text: inline in ``data`` (up to about 1 MiB), or staged in storage under ``key``."""

    data: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if (self.data is None) == (self.key is None):
            raise ValueError("a base64 source has exactly one of data and key")


class StagedSource(Struct, tag_field="kind", tag="staged", frozen=True, forbid_unknown_fields=True):
    """Raw bytes the writer staged in storage under ``staging/<job id>/``."""

    key: str
    filename: str | None = None  # the name the bytes arrived with
    size: int | None = None


class UrlSource(Struct, tag_field="kind", tag="url", frozen=True, forbid_unknown_fields=True):
    """The worker fetches the item's ``url``."""


class LinkSource(Struct, tag_field="kind", tag="link", frozen=True, forbid_unknown_fields=True):
    """A URL, FILE_LINK or FOLDER_LINK attachment: no bytes."""


class RejectedSource(Struct, tag_field="kind", tag="rejected", frozen=True, forbid_unknown_fields=True):
    """A file the ingress refused while it streamed in; reported by the job so ``mode`` applies."""

    error: ErrorInfo


Source: TypeAlias = Base64Source | StagedSource | UrlSource | LinkSource | RejectedSource
BYTE_SOURCES = (Base64Source, StagedSource, RejectedSource)


class IngestItem(Struct, kw_only=True, forbid_unknown_fields=True):
    id: uuid.UUID  # the attachment's id
    fields: NewAttachment = msgspec.field(default_factory=NewAttachment)
    source: Source


class Job(Struct, kw_only=True, forbid_unknown_fields=True):
    """What every job carries."""

    v: int = CONTRACT_VERSION
    job_id: str
    account_id: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
    actor: Actor = Actor()
    # The X-Request-ID of the request that asked for the job: on the worker's log lines for it.
    request_id: Annotated[str, Meta(pattern=r"^[A-Za-z0-9._\-]{1,128}$")] | None = None


class IngestJob(Job, kw_only=True):
    """``ingest``: turn sources into committed attachments. ``mode`` says what one bad item does."""

    mode: Mode = "atomic"
    many: bool | None = None  # answer as a many-file upload; default: more than one item
    max_file_bytes: Annotated[int, Meta(gt=0)] | None = None  # the account's limit; default the setting's
    items: Annotated[list[IngestItem], Meta(min_length=1)]

    def __post_init__(self) -> None:
        staging = storage.staging_prefix(self.job_id)
        for item in self.items:
            key = getattr(item.source, "key", None)
            if key is not None and not key.startswith(staging):
                raise ValueError(f"staged bytes must lie under {staging}")

    @property
    def answers_many(self) -> bool:
        return len(self.items) > 1 if self.many is None else self.many


class Changes(Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """The fields a change sets; absent fields stay as they are, ``status: null`` clears it."""

    name: Name | UnsetType = UNSET
    display_order: Int32 | UnsetType = UNSET
    available: bool | UnsetType = UNSET
    status: Status | UnsetType | None = UNSET

    def given(self) -> dict[str, Any]:
        return {k: v for k in self.__struct_fields__ if (v := getattr(self, k)) is not UNSET}


class UpdateJob(Job, kw_only=True):
    """``update_attachment``: change the changeable fields."""

    attachment_id: AttachmentRef
    changes: Changes


class CancelJob(Job, kw_only=True):
    """``cancel_attachment``: soft delete."""

    attachment_id: AttachmentRef


class CloseSessionJob(Job, kw_only=True):
    """``close_session``: close the upload session and announce its attachments in one event."""

    session_token: Text255


class PutTargetJob(Job, kw_only=True):
    """``put_target``: place a target under a parent (or at the top, with ``parent: null``)."""

    target_type: TargetType
    target_id: TargetId
    parent: TargetRef | None = None


class SetLinksJob(Job, kw_only=True):
    """``set_links``: the field's list of attachments becomes exactly ``ids``."""

    target_type: TargetType
    target_id: TargetId
    field: Annotated[str, Meta(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,99}$")]
    ids: Annotated[list[AttachmentRef], Meta(max_length=500)]


# The arq function that runs each kind of job: the one way into the workers.
FUNCTIONS: dict[type[Job], str] = {
    IngestJob: "ingest",
    UpdateJob: "update_attachment",
    CancelJob: "cancel_attachment",
    CloseSessionJob: "close_session",
    PutTargetJob: "put_target",
    SetLinksJob: "set_links",
}
JOB_TYPES: dict[str, type[Job]] = {name: cls for cls, name in FUNCTIONS.items()}


# Rows as outcomes and events carry them.
class AttachmentRow(Struct, kw_only=True):
    """An ``attachments`` row: every column of ``schema.sql``, ``sha256`` in hex."""

    id: uuid.UUID
    seq: int
    account_id: str
    target_type: str | None
    target_id: str | None
    field: str | None
    parent_type: str | None
    parent_attachment_id: uuid.UUID | None
    version_of: uuid.UUID | None = None
    version: int
    version_root: uuid.UUID | None
    is_latest: bool
    ancestors: list[str]
    attachment_type: AttachmentType
    name: str
    filename: str | None
    content_type: str | None
    size: int | None
    sha256: str | None
    storage_key: str | None
    url: str | None
    width: int | None
    height: int | None
    variants: dict[str, Any] | None
    display_order: int
    available: bool
    status: Status | None
    created_from: CreatedFrom
    publish: Publish
    session_token: str | None
    created_by_type: ActorType
    created_by_id: str | None
    impersonator_id: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    canceled_at: dt.datetime | None
    unlinked_at: dt.datetime | None = None


class SessionRow(Struct, kw_only=True):
    session_token: str
    opened_at: dt.datetime
    last_upload_at: dt.datetime
    closed_at: dt.datetime | None


class PlacedTarget(Struct, kw_only=True):
    type: str
    id: str
    ancestors: list[str]
    parent: TargetRef | None


def attachment_row(record: Any) -> AttachmentRow:
    """An ``AttachmentRow`` from a database record selected with ``records.COLUMNS``."""
    return AttachmentRow(**dict(record))


def session_row(record: Any) -> SessionRow:
    return SessionRow(**dict(record))


# Outcomes, stored under attachd:outcome:<job id>, tagged by "outcome".
class Outcome(Struct, kw_only=True, tag_field="outcome"):
    @property
    def state(self) -> str:
        return "complete"


class Failed(Outcome, tag="failed", kw_only=True):
    error: ErrorInfo
    errors: list[ItemError] = []
    many: bool = False

    @property
    def state(self) -> str:
        return "failed"


class Ingested(Outcome, tag="ingested", kw_only=True):
    attachments: list[AttachmentRow]
    errors: list[ItemError] = []
    many: bool = False
    files_q: int | None = None  # live attachments on the target, for a many-file upload


class Updated(Outcome, tag="updated", kw_only=True):
    attachment: AttachmentRow


class Canceled(Outcome, tag="canceled", kw_only=True):
    attachment: AttachmentRow


class SessionClosed(Outcome, tag="session_closed", kw_only=True):
    session: SessionRow
    attachments: list[AttachmentRow]


class TargetPlaced(Outcome, tag="target_placed", kw_only=True):
    target: PlacedTarget


class LinksSet(Outcome, tag="links_set", kw_only=True):
    attachments: list[AttachmentRow]


AnyOutcome: TypeAlias = Failed | Ingested | Updated | Canceled | SessionClosed | TargetPlaced | LinksSet


# Events, as the relay adds them to the attachd:events stream (workers/EVENTS.md).
class Event(Struct, kw_only=True, tag_field="type"):
    seq: int
    account_id: str
    attachment_id: uuid.UUID | None
    occurred_at: dt.datetime


class AttachmentCreated(Event, tag="attachment.created", kw_only=True):
    attachment: AttachmentRow


class AttachmentUpdated(Event, tag="attachment.updated", kw_only=True):
    changes: dict[str, Any]
    attachment: AttachmentRow


class AttachmentCanceled(Event, tag="attachment.canceled", kw_only=True):
    attachment: AttachmentRow


class ClosedSession(Struct, kw_only=True):
    session_token: str
    reason: Literal["request", "idle"]
    opened_at: dt.datetime
    last_upload_at: dt.datetime
    closed_at: dt.datetime


class UploadSessionClosed(Event, tag="upload_session.closed", kw_only=True):
    session: ClosedSession
    attachment_ids: list[uuid.UUID]
    attachments: list[AttachmentRow]


class AttachmentLinked(Event, tag="attachment.linked", kw_only=True):
    attachment: AttachmentRow


class AttachmentUnlinked(Event, tag="attachment.unlinked", kw_only=True):
    attachment: AttachmentRow


class TargetMoved(Event, tag="target.moved", kw_only=True):
    target: TargetRef
    parent: TargetRef | None
    ancestors: list[str]


class AttachmentPurged(Event, tag="attachment.purged", kw_only=True):
    pass


AnyEvent: TypeAlias = (
    AttachmentCreated
    | AttachmentUpdated
    | AttachmentCanceled
    | UploadSessionClosed
    | AttachmentLinked
    | AttachmentUnlinked
    | TargetMoved
    | AttachmentPurged
)


class UnknownJob(Exception):
    """A job the worker cannot run: another contract version, or a payload that breaks the contract."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


_encoder = msgspec.json.Encoder()
_outcome_decoder = msgspec.json.Decoder(AnyOutcome)


def encode(value: Any) -> bytes:
    """JSON for anything in this contract (Structs, and the dicts arq wraps them in)."""
    return _encoder.encode(value)


def decode_job(function: str, payload: Any) -> Job:
    """The typed job from arq's argument; raises ``UnknownJob`` naming what is wrong."""
    job_type = JOB_TYPES.get(function)
    if job_type is None:
        raise UnknownJob(f"no job function {function!r}")
    version = payload.get("v") if isinstance(payload, dict) else None
    if version != CONTRACT_VERSION:
        raise UnknownJob(
            f"job contract version {version!r} is not supported; this worker runs version {CONTRACT_VERSION}", "v"
        )
    try:
        return msgspec.convert(payload, job_type)
    except msgspec.ValidationError as exc:
        path = str(exc).rpartition(" - at `$.")[2].rstrip("`") if " - at `$." in str(exc) else None
        raise UnknownJob(f"the {function} job breaks the contract: {exc}", path) from None


def decode_outcome(raw: bytes) -> AnyOutcome:
    return _outcome_decoder.decode(raw)


def json_schema() -> dict[str, Any]:
    """One JSON Schema document: every job payload, outcome and event, with shared definitions."""
    jobs = list(FUNCTIONS)
    outcomes = [Failed, Ingested, Updated, Canceled, SessionClosed, TargetPlaced, LinksSet]
    events = [
        AttachmentCreated,
        AttachmentUpdated,
        AttachmentCanceled,
        UploadSessionClosed,
        AttachmentLinked,
        AttachmentUnlinked,
        TargetMoved,
        AttachmentPurged,
    ]
    schemas, components = msgspec.json.schema_components(
        [*jobs, AnyOutcome, AnyEvent, *outcomes, *events], ref_template="#/$defs/{name}"
    )
    job_refs, (outcome_ref, event_ref) = schemas[: len(jobs)], schemas[len(jobs) : len(jobs) + 2]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"attachd job contract, version {CONTRACT_VERSION}",
        "description": "Jobs (arq argument a[0], by function), outcomes (attachd:outcome:<job id>) and events "
        "(the attachd:events stream's `event` field). Generated by `python -m services.core.contract`.",
        "$defs": components,
        "properties": {
            "jobs": {"properties": {FUNCTIONS[cls]: ref for cls, ref in zip(jobs, job_refs, strict=True)}},
            "outcome": outcome_ref,
            "event": event_ref,
        },
    }


def schema_text() -> str:
    import json

    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(schema_text())
