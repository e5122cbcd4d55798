"""The columns of an attachment and the field catalogue of its API record, as data. Pure.

One place answers "what is this field": the query compiler (what may be
filtered, and how), the write validator (what may be set, how long it may be)
and ``GET /v1/attachments/fields`` all read :data:`FIELDS` and :data:`PICKLISTS`;
the statements' column lists (``records.COLUMNS``, ``repository.INSERT_COLUMNS``)
and the API record's keys are derived from :data:`COLUMN_FIELDS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

FieldType = Literal["uuid", "integer", "text", "boolean", "datetime", "picklist", "text[]", "object"]


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: FieldType
    column: str | None  # None: virtual, not a column of its own
    max_length: int | None  # characters, for text
    queryable: bool
    writable: bool  # settable on create
    updatable: bool  # settable by PATCH
    picklist: str | None  # key into PICKLISTS
    description: str
    inserted: bool  # written by the INSERT of a new row; False: the database fills it in
    internal: bool  # a storage detail: neither in the catalogue nor in the API record
    select: str  # how a read selects it (the column, or an expression AS the name); "" when virtual


@dataclass(frozen=True)
class PicklistValue:
    value: str
    label: str
    sort_order: int
    is_default: bool = False
    is_active: bool = True


def _picklist(*entries: tuple[str, str], default: str | None = None) -> list[PicklistValue]:
    return [
        PicklistValue(value, label, order, is_default=value == default)
        for order, (value, label) in enumerate(entries, start=1)
    ]


PICKLISTS: dict[str, list[PicklistValue]] = {
    "attachment_type": _picklist(
        ("FILE_LINK", "File Link"),
        ("FOLDER_LINK", "Folder Link"),
        ("URL", "URL"),
        ("FILE_ATTACHMENT", "Attachment"),
        default="FILE_ATTACHMENT",
    ),
    "status": _picklist(("approved", "Approved"), ("pending", "Pending"), ("required", "Required")),
    "created_from": _picklist(
        ("task_panel", "Task panel"), ("rework", "Rework"), ("feedback", "Feedback"), ("api", "API"), default="api"
    ),
    "publish": _picklist(("all", "All"), ("internal", "Internal"), default="all"),
    "created_by_type": _picklist(
        ("User", "User"),
        ("Application", "Application"),
        ("Contact", "Contact"),
        ("Resource", "Resource"),
        default="User",
    ),
}


def _field(
    name: str,
    type: FieldType,
    description: str,
    *,
    max_length: int | None = None,
    queryable: bool = True,
    writable: bool = False,
    updatable: bool = False,
    virtual: bool = False,
    inserted: bool = True,
    internal: bool = False,
    select: str | None = None,
) -> FieldSpec:
    return FieldSpec(
        name=name,
        type=type,
        column=None if virtual else name,
        max_length=max_length,
        queryable=queryable and not internal,
        writable=writable,
        updatable=updatable,
        picklist=name if type == "picklist" else None,
        description=description,
        inserted=inserted and not virtual,
        internal=internal,
        select="" if virtual else select or name,
    )


# Every field, in the order of the row as it is read (virtual ones where the catalogue lists them).
_ALL: tuple[FieldSpec, ...] = (
    # identity
    _field("id", "uuid", "The attachment's id (UUIDv7)."),
    _field("seq", "integer", "The attachment's integer id, for clients that need one.", inserted=False),
    _field("account_id", "text", "The tenant; always the caller's own, so never a filter.", queryable=False),
    # placement
    _field(
        "target_type",
        "text",
        "Type of the record the attachment belongs to, e.g. Ticket.",
        max_length=100,
        writable=True,
    ),
    _field("target_id", "text", "Id of the record the attachment belongs to.", max_length=255, writable=True),
    _field("field", "text", "The target's attachment field; null for its default list.", max_length=100, writable=True),
    _field("parent_type", "text", "Where an upload not yet linked is headed.", max_length=100, writable=True),
    _field("parent_attachment_id", "uuid", "The attachment this one is nested under.", writable=True),
    _field("version", "integer", "Version number within a chain of versions."),
    _field("version_root", "uuid", "The first version of a file, for every later one.", internal=True),
    _field("is_latest", "boolean", "Whether this is the newest live version of its file.", inserted=False),
    _field(
        "ancestors",
        "text[]",
        "The target and every ancestor of it as 'Type:id'; filter with 'ancestor'.",
        queryable=False,
    ),
    _field(
        "ancestor",
        "text",
        "Filter only: matches attachments anywhere under 'Type:id', e.g. 'Ticket:42'.",
        max_length=100 + 1 + 255,
        virtual=True,
    ),
    # content
    _field("attachment_type", "picklist", "What the attachment is: stored bytes or a link.", writable=True),
    _field("name", "text", "Display name.", max_length=255, writable=True, updatable=True),
    _field(
        "filename",
        "text",
        "Sanitized original filename (at most 255 bytes of UTF-8).",
        max_length=255,
        writable=True,
    ),
    _field("content_type", "text", "Media type, sniffed from the bytes.", max_length=100, writable=True),
    _field("size", "integer", "Size of the stored bytes.", writable=True),
    _field(
        "sha256",
        "text",
        "Hex SHA-256 of the stored bytes.",
        max_length=64,
        queryable=False,
        select="encode(sha256, 'hex') AS sha256",
    ),
    _field("storage_key", "text", "Where the original's bytes are stored.", internal=True),
    _field(
        "url",
        "text",
        "The link of a URL, FILE_LINK or FOLDER_LINK attachment, or the fetched source.",
        max_length=2048,
        writable=True,
    ),
    _field("width", "integer", "Image width in pixels."),
    _field("height", "integer", "Image height in pixels."),
    _field("variants", "object", "The stored thumbnails: key, size and dimensions of each.", internal=True),
    # workflow
    _field("display_order", "integer", "Position in the target's list.", writable=True, updatable=True),
    _field("available", "boolean", "Whether the attachment is offered to users.", writable=True, updatable=True),
    _field("status", "picklist", "Review status; null when not under review.", writable=True, updatable=True),
    _field("created_from", "picklist", "Where in the product the attachment was made.", writable=True),
    _field("publish", "picklist", "Who may see the attachment.", writable=True),
    _field(
        "session_token",
        "text",
        "Groups uploads whose notification waits for the session to close.",
        max_length=255,
        writable=True,
    ),
    # provenance
    _field("created_by_type", "picklist", "Kind of actor that created the attachment."),
    _field("created_by_id", "text", "Id of the actor that created the attachment.", max_length=255),
    _field(
        "impersonator_id",
        "text",
        "Id of the actor that acted on the creator's behalf.",
        max_length=255,
        writable=True,
    ),
    _field("created_at", "datetime", "When the attachment was created.", inserted=False),
    _field("updated_at", "datetime", "When the attachment last changed.", inserted=False),
    _field("canceled_at", "datetime", "When the attachment was deleted; null while it is live.", inserted=False),
    # added by migration 0002, so last in the table
    _field("version_of", "uuid", "The attachment this one is the next version of.", writable=True),
    _field(
        "unlinked_at",
        "datetime",
        "When the upload was last taken off a target; the unlinked TTL counts from then.",
        inserted=False,
        internal=True,
    ),
)

FIELDS: dict[str, FieldSpec] = {spec.name: spec for spec in _ALL if not spec.internal}
# The columns of the attachments table, in the order every read selects them.
COLUMN_FIELDS: tuple[FieldSpec, ...] = tuple(spec for spec in _ALL if spec.column is not None)


def describe_fields() -> list[dict[str, Any]]:
    """The catalogue as the fields endpoint serves it, in catalogue order."""
    return [
        {
            "name": spec.name,
            "type": spec.type,
            "max_length": spec.max_length,
            "queryable": spec.queryable,
            "writable": spec.writable,
            "updatable": spec.updatable,
            "description": spec.description,
            "picklist_values": None
            if spec.picklist is None
            else [
                {
                    "value": v.value,
                    "label": v.label,
                    "sort_order": v.sort_order,
                    "is_default": v.is_default,
                    "is_active": v.is_active,
                }
                for v in PICKLISTS[spec.picklist]
            ],
        }
        for spec in FIELDS.values()
    ]
