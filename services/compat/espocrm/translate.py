"""EspoCRM's Attachment API in attachd's terms and back: request bodies, records, ids. Pure, no I/O."""

from __future__ import annotations

import datetime as dt
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.compat.espocrm.fields import (
    ATTACHMENT_FIELDS,
    ATTRIBUTE_ALIASES,
    FieldKind,
    derived_attributes,
    ids_attribute,
    kind_of,
    link_attribute,
)
from services.core.errors import ApiError, bad_request

ROLE = "Attachment"
# EspoCRM takes these roles; an Inline Attachment belongs in a wysiwyg field, which attachd does not link.
ROLES = ("Attachment", "Inline Attachment")
NAME_MAX = 255
TYPE_MAX = 100


def _string(body: Mapping[str, Any], key: str, *, max_length: int = 255) -> str | None:
    """An optional string attribute, held to EspoCRM's type and length and to attachd's no control chars."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request("invalid_type", f"{key} must be a string", key)
    if len(value) > max_length:
        raise bad_request("too_long", f"{key} is longer than {max_length} characters", key)
    if any(ord(c) < 32 for c in value):
        raise bad_request("invalid_value", f"{key} must not contain control characters", key)
    return value


def upload_body(body: Any) -> dict[str, Any]:
    """``POST Attachment``'s payload as the native create body: an upload that waits unlinked for its record.

    As EspoCRM does: ``parentType`` (an Attachment-Multiple field) wins over ``relatedType`` (a File field);
    ``parentId`` and ``relatedId`` are ignored (the record links its attachments itself, by id); ``role``
    defaults to Attachment; unknown attributes are ignored."""
    if not isinstance(body, dict):
        raise bad_request("invalid_body", "the payload must be a JSON object of attachment attributes")
    if body.get("isBeingUploaded"):
        raise bad_request(
            "invalid_value", "chunked uploads (isBeingUploaded) are not supported: send the file", "isBeingUploaded"
        )
    if "file" not in body or body["file"] is None:
        raise bad_request("missing_field", "No file contents.", "file")
    if not isinstance(body["file"], str):
        raise bad_request("invalid_type", "Non-string file contents.", "file")
    role = _string(body, "role", max_length=36) or ROLE
    if role not in ROLES:
        raise bad_request("invalid_value", "Not supported attachment 'role'.", "role")
    parent_type, related_type = _string(body, "parentType"), _string(body, "relatedType")
    entity_type = parent_type or related_type
    target_field = _string(body, "field", max_length=100)
    if not entity_type or not target_field:
        raise bad_request(
            "missing_field",
            "Params 'field' and 'parentType' not passed along with 'file'.",
            "parentType" if not entity_type else "field",
        )
    kind = kind_of(entity_type, target_field)
    if kind is None:
        raise bad_request("invalid_value", f"Field '{target_field}' does not exist.", "field")
    if role != ROLE:
        field_type = "attachmentMultiple" if kind == "multiple" else "file"
        raise bad_request("invalid_value", f"Field type '{field_type}' is not allowed for {role}.", "role")
    name = _string(body, "name", max_length=NAME_MAX)
    if not name or not name.strip():
        raise bad_request("missing_field", "name is required", "name")
    native: dict[str, Any] = {
        "name": name,
        "filename": name,
        "parent_type": entity_type,
        "field": target_field,
        "data": body["file"],
    }
    if (declared := _string(body, "type", max_length=TYPE_MAX)) is not None:
        native["content_type"] = declared
    return native


# A native field an error may name, as EspoCRM's payload calls it.
_NATIVE_TO_ESPO = {"data": "file", "content_type": "type", "parent_type": "parentType", "filename": "name"}


def espo_field(native: str | None) -> str | None:
    return None if native is None else _NATIVE_TO_ESPO.get(native, native)


def espo_datetime(value: dt.datetime | str | None) -> str | None:
    """EspoCRM's date-time: ``YYYY-MM-DD HH:mm:ss`` in UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def attachment_attributes(row: Mapping[str, Any]) -> dict[str, Any]:
    """An attachd row as EspoCRM's Attachment record. A File field's attachment is related to its record
    (``relatedType`` / ``relatedId``), an Attachment-Multiple field's has it as parent; an upload not yet
    linked names only the type it waits for."""
    entity_type = row["target_type"] or row["parent_type"]
    target_field = row["field"]
    single = entity_type is not None and target_field is not None and kind_of(entity_type, target_field) == "single"
    record_id = row["target_id"]
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "deleted": row["canceled_at"] is not None,
        "type": row["content_type"],
        "size": row["size"],
        "parentId": None if single else record_id,
        "parentType": None if single else entity_type,
        "relatedId": record_id if single else None,
        "relatedType": entity_type if single else None,
        "sourceId": None,
        "field": target_field,
        "isBeingUploaded": False,
        "role": ROLE,
        "storage": None,
        "storageFilePath": None,
        "global": False,
        "createdAt": espo_datetime(row["created_at"]),
        "createdById": row["created_by_id"],
    }


@dataclass
class RecordWrite:
    """A ``POST``/``PUT`` of a record: the attachment fields it sets, and the rest, answered as given."""

    links: dict[str, list[str]] = field(default_factory=dict)  # field -> attachment ids (a File field: 0 or 1)
    keys: dict[str, str] = field(default_factory=dict)  # field -> its attribute as the client spelled it
    given: dict[str, Any] = field(default_factory=dict)


def record_write(entity_type: str, body: Any) -> RecordWrite:
    """Read a record write. ``attachmentsIds: [...]`` makes the field exactly these attachments (the others
    are unlinked); ``fileId: "..."`` (or null) replaces a File field's file. attachd keeps no other field of
    the record: those are only answered back, as EspoCRM answers a saved record."""
    if not isinstance(body, dict):
        raise bad_request("invalid_body", "the payload must be a JSON object of record attributes")
    write = RecordWrite()
    derived = derived_attributes(entity_type)
    for key, value in body.items():
        attribute = ATTRIBUTE_ALIASES.get(key, str(key))
        linked = link_attribute(entity_type, attribute)
        if linked is None:
            if attribute not in derived and attribute != "id":
                write.given[key] = value
            continue
        target_field, kind = linked
        if target_field in write.keys:
            earlier = write.keys[target_field]
            raise bad_request("duplicate_field", f"{attribute} is given twice (as {earlier} and {key})", key)
        write.keys[target_field] = key
        write.links[target_field] = _ids(value, key, kind)
    return write


def _ids(value: Any, key: str, kind: FieldKind) -> list[str]:
    if kind == "single":
        if value is None:
            return []
        if not isinstance(value, str):
            raise bad_request("invalid_type", f"{key} must be an attachment id or null", key)
        return [value]
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_request("invalid_type", f"{key} must be a list of attachment ids", key)
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise bad_request("invalid_type", f"{key}[{index}] must be an attachment id", f"{key}[{index}]")
    return list(dict.fromkeys(value))


def attachment_uuids(ids: Sequence[str], key: str) -> list[uuid.UUID]:
    """The attachd ids of a field's list; anything else names no attachment of this account."""
    out = []
    for index, ident in enumerate(ids):
        try:
            out.append(uuid.UUID(ident))
        except ValueError:
            raise bad_request("invalid_link", f"attachment {ident} does not exist", f"{key}[{index}]") from None
    return out


def unlinkable(rows: Mapping[uuid.UUID, Mapping[str, Any]], ids: Sequence[uuid.UUID], entity_type: str) -> int | None:
    """The index of the first id a new record cannot take (no such live attachment of the account, or one
    already on another record or headed for another type), or None: the native link rule, checked before
    the record is made so that a refused create leaves nothing behind."""
    for index, ident in enumerate(ids):
        row = rows.get(ident)
        if row is None or row["canceled_at"] is not None or row["target_id"] is not None:
            return index
        if row["parent_type"] not in (None, entity_type):
            return index
    return None


def record_attributes(
    entity_type: str, record_id: str, given: Mapping[str, Any], linked: Mapping[str, Sequence[Mapping[str, Any]]]
) -> dict[str, Any]:
    """The saved record as EspoCRM answers it: its id, the attributes given, and each attachment field with
    the names (and types) EspoCRM derives from the ids."""
    out: dict[str, Any] = {"id": record_id, **given}
    for target_field, kind in ATTACHMENT_FIELDS.get(entity_type, {}).items():
        rows = linked.get(target_field, [])
        if kind == "multiple":
            out[ids_attribute(target_field, kind)] = [str(r["id"]) for r in rows]
            out[f"{target_field}Names"] = {str(r["id"]): r["name"] for r in rows}
            out[f"{target_field}Types"] = {str(r["id"]): r["content_type"] for r in rows}
        else:
            first = rows[0] if rows else None
            out[ids_attribute(target_field, kind)] = None if first is None else str(first["id"])
            out[f"{target_field}Name"] = None if first is None else first["name"]
    return out


def new_record_id(now: float | None = None, random_hex: str | None = None) -> str:
    """A record id as EspoCRM makes one: PHP's ``uniqid()`` (13 hex digits of seconds and microseconds) and
    4 random hex digits, 17 in all."""
    now = time.time() if now is None else now
    seconds = int(now)
    micros = round((now - seconds) * 1_000_000) % 1_000_000
    return f"{seconds:08x}{micros:05x}{random_hex if random_hex is not None else secrets.token_hex(2)}"


# EspoCRM answers only these statuses; an oversized file is its Forbidden ("Attachment size exceeds ...").
_STATUS = {413: 403, 415: 400, 422: 400}
# attachd's error codes as EspoCRM's validation failure types.
_VALIDATION_TYPE = {"missing_field": "required", "too_long": "maxLength", "size_exceeded": "maxFileSize"}


@dataclass(frozen=True)
class EspoError:
    """An error as EspoCRM answers: the status, the reason in ``X-Status-Reason``, and a body only for a
    field's failure (``{"messageTranslation": {"label": "validationFailure", ...}}``)."""

    status: int
    reason: str
    body: dict[str, Any] | None


def espo_error(exc: ApiError) -> EspoError:
    field_name = espo_field(exc.field)
    body = None
    if field_name is not None:
        body = {
            "messageTranslation": {
                "label": "validationFailure",
                "scope": None,
                "data": {"field": field_name, "type": _VALIDATION_TYPE.get(exc.code, "valid")},
            }
        }
    return EspoError(_STATUS.get(exc.status, exc.status), header_text(exc.message), body)


def header_text(text: str, limit: int = 1000) -> str:
    """A message fit for a header value: printable ASCII (EspoCRM strips the rest likewise), bounded."""
    return "".join(c if " " <= c <= "~" else " " for c in text)[:limit]
