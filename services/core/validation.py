"""Rules for what a client may send: create fields, changes, form coercion. Pure, no I/O.

The ingress runs these to answer a bad request at once; the worker runs them
again on every job, because internal services enqueue jobs directly.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Mapping
from typing import Any, NoReturn

import msgspec
import orjson

from services.core.contract import (
    BYTE_SOURCES,
    AttachmentRef,
    Changes,
    LinkSource,
    NewAttachment,
    Source,
    TargetRef,
    UrlSource,
)
from services.core.errors import ApiError, bad_request
from services.core.fields import FIELDS, PICKLISTS
from services.core.filenames import sanitize_filename

LINK_TYPES = frozenset({"URL", "FILE_LINK", "FOLDER_LINK"})
SOURCES = ("data", "url", "file")
# The create fields: the contract's (as the API names them) and ``data``, a source that is not a field.
CREATE_FIELDS = frozenset({f.encode_name for f in msgspec.structs.fields(NewAttachment)} | {"data"})
NESTED_TARGET_TYPE = "Attachment"
CHANGE_FIELDS = frozenset(name for name, spec in FIELDS.items() if spec.updatable)
_TYPE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_:.\-]*$")
_INT32 = 2**31 - 1


def _picklist(name: str, value: Any, field: str) -> str:
    allowed = [v.value for v in PICKLISTS[name]]
    if value not in allowed:
        raise bad_request("invalid_value", f"{field} must be one of {', '.join(allowed)}", field)
    return str(value)


def _text(value: Any, field: str, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise bad_request("missing_field", f"{field} is required", field)
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise bad_request("invalid_type", f"{field} must be a string", field)
    text = str(value)
    if required and not text.strip():
        raise bad_request("missing_field", f"{field} must not be empty", field)
    max_length = FIELDS[field].max_length
    if max_length is not None and len(text) > max_length:
        raise bad_request("too_long", f"{field} is longer than {max_length} characters", field)
    if any(ord(c) < 32 for c in text):
        raise bad_request("invalid_value", f"{field} must not contain control characters", field)
    return text


def _required_text(value: Any, field: str) -> str:
    text = _text(value, field, required=True)
    assert text is not None  # required: a missing value raised
    return text


def _type_name(value: Any, field: str) -> str | None:
    text = _text(value, field)
    if text is not None and not _TYPE_NAME.match(text):
        raise bad_request(
            "invalid_value", f"{field} must start with a letter and contain only letters, digits and _ : . -", field
        )
    return text


def _integer(value: Any, field: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not -_INT32 <= value <= _INT32:
        raise bad_request("invalid_type", f"{field} must be an integer", field)
    return value


def _boolean(value: Any, field: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request("invalid_type", f"{field} must be true or false", field)
    return value


_SEQ_MAX = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")


def path_ref(text: str) -> AttachmentRef | None:
    """An attachment named in a path: its UUID or its integer id; None when it can name no attachment."""
    if _DIGITS.fullmatch(text):
        seq = int(text)
        return seq if 1 <= seq <= _SEQ_MAX else None
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def parse_attachment_ref(value: Any, field: str) -> AttachmentRef | None:
    """A field that names an attachment: its id (a UUID) or its integer id (a number, or digits in a string,
    as a form sends it); None when absent."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        ref: AttachmentRef | None = value if 1 <= value <= _SEQ_MAX else None
    else:
        ref = path_ref(value) if isinstance(value, str) else None
    if ref is None:
        raise bad_request("invalid_value", f"{field} must be an attachment id (a UUID or an integer id)", field)
    return ref


def parse_new_attachment(
    body: Mapping[str, Any], *, has_file: bool = False, filename_hint: str | None = None
) -> NewAttachment:
    """Validate one create request; ``has_file`` says a multipart file part carries the bytes."""
    if not isinstance(body, Mapping):
        raise bad_request("invalid_body", "an attachment must be a JSON object", None)
    for key in body:
        if key not in CREATE_FIELDS:
            raise bad_request("unknown_field", f"{key} is not a field of an attachment", key)

    attachment_type = _picklist(
        "attachment_type", _given(body, "attachment_type", "FILE_ATTACHMENT"), "attachment_type"
    )
    given = [s for s in SOURCES if (has_file if s == "file" else body.get(s) is not None)]
    if attachment_type in LINK_TYPES:
        if body.get("data") is not None or has_file:
            field = "data" if body.get("data") is not None else "file"
            raise bad_request("invalid_source", f"a {attachment_type} attachment stores no bytes: give url only", field)
    elif not given:
        raise bad_request(
            "missing_source",
            "give exactly one source: data (base64 or a data: URI), url, or a multipart file part",
            "data",
        )
    elif len(given) > 1:
        # Blame a field the client typed, not the file part it most likely meant.
        blamed = given[1] if given[1] != "file" else given[0]
        raise bad_request("too_many_sources", f"give exactly one source, not {' and '.join(given)}", blamed)
    url = _text(body.get("url"), "url")
    check_link_source(attachment_type, url)

    target_type = _type_name(body.get("target_type"), "target_type")
    target_id = _text(body.get("target_id"), "target_id")
    parent_type = _type_name(body.get("parent_type"), "parent_type")
    parent = parse_parent(body.get("parent"))
    parent_attachment_id = parse_attachment_ref(body.get("parent_attachment_id"), "parent_attachment_id")
    version_of = parse_attachment_ref(body.get("version_of"), "version_of")
    check_placement(target_type, target_id, parent_type, parent_attachment_id, parent, version_of)

    raw_name = _text(body.get("name"), "name")
    filename = body.get("filename")
    if filename is not None and not isinstance(filename, str):
        raise bad_request("invalid_type", "filename must be a string", "filename")
    filename = filename or filename_hint
    declared_size = body.get("size")
    if declared_size is not None and (
        isinstance(declared_size, bool) or not isinstance(declared_size, int) or declared_size < 0
    ):
        raise bad_request("invalid_type", "size must be a non-negative integer", "size")
    status = body.get("status")

    return NewAttachment(
        target_type=target_type,
        target_id=target_id,
        field=_text(body.get("field"), "field"),
        parent_type=parent_type,
        attachment_type=attachment_type,  # type: ignore[arg-type]  # checked against the picklist
        name=raw_name.strip() if raw_name and raw_name.strip() else None,
        filename=sanitize_filename(filename) if filename else None,
        content_type=_text(body.get("content_type"), "content_type"),
        url=url,
        display_order=_integer(body.get("display_order"), "display_order", 0),
        available=_boolean(body.get("available"), "available", True),
        status=None if status is None else _picklist("status", status, "status"),  # type: ignore[arg-type]
        created_from=_picklist("created_from", _given(body, "created_from", "api"), "created_from"),  # type: ignore[arg-type]
        publish=_picklist("publish", _given(body, "publish", "all"), "publish"),  # type: ignore[arg-type]
        parent_attachment_id=parent_attachment_id,
        version_of=version_of,
        session_token=_text(body.get("session_token"), "session_token"),
        impersonator_id=_text(body.get("impersonator_id"), "impersonator_id"),
        declared_size=declared_size,
        parent=None if parent is None else TargetRef(*parent),
    )


def _given(body: Mapping[str, Any], key: str, default: str) -> Any:
    """The value sent, or the default when absent or null; a wrong-typed value (``false``, ``[]``) is not absent."""
    value = body.get(key)
    return default if value is None else value


_WEB_URL = re.compile(r"^https?://", re.IGNORECASE)
_FILE_URL = re.compile(r"^file://[^\x00-\x1f]+$", re.IGNORECASE)  # file:///C:/x, file://server/share/x
_UNC_PATH = re.compile(r"^\\\\[^\\/\x00-\x1f]+\\[^\\/\x00-\x1f]+(?:\\[^\x00-\x1f]*)?$")  # \\server\share[\...]
FILE_LINK_TYPES = frozenset({"FILE_LINK", "FOLDER_LINK"})


def check_link_source(attachment_type: str, url: str | None) -> None:
    """A link attachment is its url; any other kind may name one only to fetch it (http or https). A
    FILE_LINK or FOLDER_LINK may also point into a file system, as Autotask's do: a ``file://`` URL or a
    UNC path (``\\\\server\\share\\dir\\file.txt``), stored as given and never fetched."""
    if attachment_type in LINK_TYPES and url is None:
        raise bad_request("missing_field", f"a {attachment_type} attachment needs url", "url")
    if url is None or _WEB_URL.match(url):
        return
    if attachment_type in FILE_LINK_TYPES:
        if _FILE_URL.match(url) or _UNC_PATH.match(url):
            return
        raise bad_request(
            "invalid_url",
            f"a {attachment_type}'s url is an http://, https:// or file:// URL, or a UNC path (\\\\server\\share\\...)",
            "url",
        )
    raise bad_request("invalid_url", "url must be an http:// or https:// URL", "url")


def check_placement(
    target_type: str | None,
    target_id: str | None,
    parent_type: str | None,
    parent_attachment_id: Any,
    parent: Any,
    version_of: Any = None,
) -> None:
    """Where the attachment goes: a target (type and id together), a parent type to link it later, a parent
    attachment to nest under, or the attachment it is the next version of (whose place it takes);
    ``parent`` places a named target in the hierarchy."""
    if (target_type is None) != (target_id is None):
        missing = "target_id" if target_id is None else "target_type"
        raise bad_request("missing_field", "target_type and target_id go together", missing)
    if version_of is not None and parent_attachment_id is not None:
        raise bad_request(
            "invalid_value",
            "a new version takes the place of the attachment it revises: give version_of or "
            "parent_attachment_id, not both",
            "parent_attachment_id",
        )
    if target_type is None and parent_type is None and parent_attachment_id is None and version_of is None:
        raise bad_request(
            "missing_field",
            "target_type and target_id are required (or parent_type and field, to link the upload later)",
            "target_type",
        )
    if parent is not None and target_type is None:
        raise bad_request(
            "missing_field",
            "parent places the target in the hierarchy: give target_type and target_id too",
            "target_type",
        )


def check_nesting(target_type: str | None, no_nesting_types: Collection[str]) -> None:
    """Autotask's rule: attachments of some record types (Account, Project, ...) cannot have nested
    attachments, so an upload to one of them cannot name a parent attachment, nor nest under one of theirs."""
    if target_type in no_nesting_types:
        raise bad_request(
            "nesting_not_allowed",
            f"attachments of a {target_type} cannot have nested attachments",
            "parent_attachment_id",
        )


def check_new_attachment(new: NewAttachment, source: Source, actor_type: str) -> None:
    """The rules of a create request that span fields, for a typed request (a job's item): its types and
    per-field limits were checked when it was decoded. Normalizes the name as the ingress does."""
    is_link = new.attachment_type in LINK_TYPES
    if is_link != isinstance(source, LinkSource):
        field = "attachment_type" if isinstance(source, LinkSource) else "source"
        raise bad_request(
            "invalid_source",
            f"a {new.attachment_type} attachment takes a {'link' if is_link else 'file, base64 or url'} source",
            field,
        )
    if isinstance(source, UrlSource) and new.url is None:
        raise bad_request("missing_source", "a url source needs url", "url")
    if isinstance(source, BYTE_SOURCES) and new.url is not None:
        raise bad_request("too_many_sources", "give exactly one source, not the bytes and url", "url")
    check_link_source(new.attachment_type, new.url)
    check_placement(
        new.target_type, new.target_id, new.parent_type, new.parent_attachment_id, new.parent, new.version_of
    )
    check_creator_may_publish(actor_type, new.publish)
    if new.name is not None:
        new.name = new.name.strip() or None


def parse_parent(value: Any, field: str = "parent") -> tuple[str, str] | None:
    """A target's parent, ``{"type": "Ticket", "id": "42"}``, or None."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) != {"type", "id"}:
        raise bad_request("invalid_value", f'{field} must be {{"type": ..., "id": ...}} or null', field)
    parent_type = _type_name(value["type"], "target_type")
    parent_id = _text(value["id"], "target_id")
    if not parent_type or not parent_id:
        raise bad_request("invalid_value", f"{field} needs a type and an id", field)
    return parent_type, parent_id


def check_creator_may_publish(actor_type: str, publish: str) -> None:
    """AttachmentInfo's rule for contact impersonation: what a Contact creates is published to all."""
    if actor_type == "Contact" and publish != "all":
        raise bad_request("invalid_value", "an attachment a Contact creates must have publish all", "publish")


def parse_target_filter(
    target_type: str | None, target_id: str | None, ancestor: str | None
) -> tuple[str | None, str | None, str | None]:
    """A read's target and ``ancestor`` (``Type:id``) parameters, held to the rules their writes follow."""
    target_type = _type_name(target_type, "target_type")
    target_id = _text(target_id, "target_id")
    if ancestor is not None:
        ancestor_type, colon, ancestor_id = _required_text(ancestor, "ancestor").partition(":")
        if not colon or not ancestor_id:
            raise bad_request("invalid_value", "ancestor is Type:id, like Ticket:42", "ancestor")
        _type_name(ancestor_type, "ancestor")
    return target_type, target_id, ancestor


def parse_session_token(value: str) -> str:
    """A session token named in a path: what an upload's ``session_token`` may be."""
    return _required_text(value, "session_token")


def parse_changes(body: Any) -> Changes:
    """Validate a PATCH body: only the updatable fields, at least one of them."""
    if not isinstance(body, Mapping):
        raise bad_request("invalid_body", "the body must be a JSON object", None)
    if not body:
        raise bad_request("missing_field", f"give at least one of {', '.join(sorted(CHANGE_FIELDS))}", None)
    changes: dict[str, Any] = {}
    for key, value in body.items():
        if key not in CHANGE_FIELDS:
            raise bad_request(
                "not_updatable",
                f"{key} cannot be changed; changeable fields are {', '.join(sorted(CHANGE_FIELDS))}",
                key,
            )
        if key == "name":
            changes[key] = _required_text(value, "name").strip()
        elif key == "display_order":
            changes[key] = _integer(value, key, 0) if value is not None else _raise_null(key)
        elif key == "available":
            changes[key] = _boolean(value, key, True) if value is not None else _raise_null(key)
        elif key == "status":
            changes[key] = None if value is None else _picklist("status", value, "status")
    return Changes(**changes)


def check_changes(changes: Changes) -> dict[str, Any]:
    """The columns a typed change sets, by the rules ``parse_changes`` applies to a PATCH body."""
    given = changes.given()
    if not given:
        raise bad_request("missing_field", f"give at least one of {', '.join(sorted(CHANGE_FIELDS))}", None)
    if "name" in given:
        given["name"] = _required_text(given["name"], "name").strip()
    return given


def _raise_null(field: str) -> NoReturn:
    raise bad_request("invalid_type", f"{field} cannot be null", field)


_FORM_INTEGER = re.compile(r"-?[0-9]{1,20}")
_FORM_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


def coerce_form(fields: Mapping[str, str]) -> dict[str, Any]:
    """Multipart form values are strings; give them the JSON types the rules expect."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        spec = FIELDS.get(key)
        if value in ("", "null") and key != "name":
            out[key] = None
        elif key == "parent":
            try:
                out[key] = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise bad_request("invalid_value", 'parent must be JSON: {"type": ..., "id": ...}', key) from None
        elif spec is not None and spec.type == "boolean":
            if value.lower() not in _FORM_BOOLEANS:
                raise bad_request("invalid_type", f"{key} must be true or false", key)
            out[key] = _FORM_BOOLEANS[value.lower()]
        elif (spec is not None and spec.type == "integer") or key == "size":
            # As JSON writes an integer (int() would also take " 1", "1_0", "+1" and other scripts' digits).
            if not _FORM_INTEGER.fullmatch(value):
                raise bad_request("invalid_type", f"{key} must be an integer", key)
            out[key] = int(value)
        else:
            out[key] = value
    return out


def parse_account_id(value: Any) -> str:
    """Tenant ids become part of storage keys, so they are held to a safe alphabet."""
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", text) or text in (".", ".."):
        raise ApiError("invalid_token", "the token's account claim is not a valid account id", status=401)
    return text
