"""The attachment record: the row's columns and the API's JSON shape. Pure."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from services.core import signing
from services.core.fields import COLUMN_FIELDS

# Selected everywhere a row is read, so every reader sees the same shape.
COLUMNS = ", ".join(spec.select for spec in COLUMN_FIELDS)


# The API record's fields, in order: the public columns, with created_by_type and created_by_id as one
# created_by object ({type, id}) where the first of them is.
def record_key(field: str) -> str:
    """The key of the API record that shows a field: created_by_type and created_by_id are in created_by."""
    return "created_by" if field.startswith("created_by_") else field


API_FIELDS = tuple(dict.fromkeys(record_key(spec.name) for spec in COLUMN_FIELDS if not spec.internal))
_BEFORE_CREATED_BY = API_FIELDS[: API_FIELDS.index("created_by")]
_AFTER_CREATED_BY = API_FIELDS[API_FIELDS.index("created_by") + 1 :]


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def row_to_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as JSON-safe values; the form that travels in job outcomes."""
    return {key: _plain(value) for key, value in dict(row).items()}


def file_links(
    row: Mapping[str, Any], *, base_url: str, secret: bytes, expires: int, signer: signing.LinkSigner | None = None
) -> dict[str, str | None]:
    if not row.get("storage_key"):
        return {"original": None, "thumbnail": None, "small": None}
    signer = signer or signing.LinkSigner(secret, expires, base_url)
    variants = row.get("variants") or {}
    return signer.links(str(row["id"]), bool(variants.get("thumbnail")), bool(variants.get("small")))


# Values of these types go out as they are; anything else (UUIDs, date-times) through _plain.
_READY = frozenset({str, int, bool, type(None), list, float})


def to_api(
    row: Mapping[str, Any], *, base_url: str, secret: bytes, expires: int, signer: signing.LinkSigner | None = None
) -> dict[str, Any]:
    """The API record of a row (or of a ``row_to_dict`` dict). Pass one ``signer`` for many rows."""
    get = row.get
    record = {key: v if type(v := get(key)) in _READY else _plain(v) for key in _BEFORE_CREATED_BY}
    record["created_by"] = {"type": get("created_by_type"), "id": get("created_by_id")}
    for key in _AFTER_CREATED_BY:
        record[key] = v if type(v := get(key)) in _READY else _plain(v)
    record["file"] = file_links(row, base_url=base_url, secret=secret, expires=expires, signer=signer)
    return record


# The read path of the query service: rows selected with API_COLUMNS are the record already, in its
# field order (created_by built by Postgres), followed by the two columns the links need. One dict()
# per row and a few changes make the record; see api_records.
_API_SQL = {
    **{spec.name: spec.select for spec in COLUMN_FIELDS},
    "created_by": "json_build_object('type', created_by_type, 'id', created_by_id) AS created_by",
}
_API_KEYS = (*API_FIELDS, "storage_key", "variants")
API_COLUMNS = ", ".join(_API_SQL[name] for name in _API_KEYS)


def api_records(
    rows: Iterable[Mapping[str, Any]], *, base_url: str, secret: bytes, expires: int
) -> list[dict[str, Any]]:
    """``to_api`` for many rows read with ``API_COLUMNS``, at a third of the cost; the same JSON.

    Date-times stay ``datetime`` objects: ``services.web.http.json_response`` writes them (orjson,
    ``OPT_UTC_Z``) exactly as ``_plain`` would."""
    links = signing.LinkSigner(secret, expires, base_url).links
    keys = _API_KEYS
    out = []
    for row in rows:
        record = dict(zip(keys, row.values(), strict=True))
        ident = record["id"] = str(record["id"])
        if (parent := record["parent_attachment_id"]) is not None:
            record["parent_attachment_id"] = str(parent)
        if (revised := record["version_of"]) is not None:
            record["version_of"] = str(revised)
        variants = record.pop("variants")
        if record.pop("storage_key"):
            record["file"] = links(
                ident, bool(variants and variants.get("thumbnail")), bool(variants and variants.get("small"))
            )
        else:
            record["file"] = {"original": None, "thumbnail": None, "small": None}
        out.append(record)
    return out
