"""List parameters, ``order_by`` and keyset cursors, compiled to SQL. Pure.

A cursor carries the sort key of the last row it returned plus the order it
was made for; the next page starts strictly after that key, so pages never
skip or repeat rows while others are inserted. List and query pages share the
format: a query's pages are in id order (``BY_ID``, no sort keys). A cursor is
the client's to return, so every value in it is checked for type and range
before it is bound.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from services.core.errors import ApiError, bad_request
from services.core.fields import FIELDS
from services.core.sqlparams import Params

# API name -> (SQL expression, Postgres type). Nullable columns are coalesced so the keyset stays total.
ORDERABLE = {
    "display_order": ("display_order", "integer"),
    "created_at": ("created_at", "timestamptz"),
    "updated_at": ("updated_at", "timestamptz"),
    "name": ("name", "text"),
    "size": ("coalesce(size, -1)", "bigint"),
    "seq": ("seq", "bigint"),
    "version": ("version", "integer"),
}
DEFAULT_ORDER = "display_order,created_at"
MAX_LIMIT = 500
DEFAULT_LIMIT = 100


@dataclass(frozen=True)
class SortKey:
    field: str
    descending: bool


BY_ID: tuple[SortKey, ...] = ()  # the order of query pages: by id alone


def parse_order_by(text: str | None) -> tuple[SortKey, ...]:
    keys: list[SortKey] = []
    for raw in (text or DEFAULT_ORDER).split(","):
        raw = raw.strip()
        descending = raw.startswith("-")
        name = raw.lstrip("-+")
        if name not in ORDERABLE:
            raise bad_request(
                "invalid_order_by",
                f"cannot order by {name!r}; choose from {', '.join(ORDERABLE)} (prefix - for descending)",
                "order_by",
            )
        if any(k.field == name for k in keys):
            raise bad_request("invalid_order_by", f"{name} appears twice in order_by", "order_by")
        keys.append(SortKey(name, descending))
    return tuple(keys)


_DIGITS = re.compile(r"[0-9]+")


def parse_limit(
    text: str | None, *, maximum: int = MAX_LIMIT, default: int = DEFAULT_LIMIT, field: str = "limit"
) -> int:
    if text is None or text == "":
        return default
    # Only ASCII digits: int() would also take " 10", "+10", "1_0" and other scripts' digits.
    if not _DIGITS.fullmatch(text):
        raise bad_request("invalid_value", f"{field} must be an integer", field)
    value = int(text) if len(text) <= 10 else 0  # past 10 digits it is out of range anyway
    if not 1 <= value <= maximum:
        raise bad_request("invalid_value", f"{field} must be between 1 and {maximum}", field)
    return value


def parse_bool(text: str | None, field: str, default: bool = False) -> bool:
    if text is None or text == "":
        return default
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise bad_request("invalid_value", f"{field} must be true or false", field)


def parse_optional_bool(text: str | None, field: str) -> bool | None:
    """A filter that is true, false or not given (None): ``available=false`` asks for the hidden ones."""
    return None if text is None or text == "" else parse_bool(text, field)


def _order_tag(order: tuple[SortKey, ...]) -> str:
    return ",".join(("-" if k.descending else "") + k.field for k in order)


def encode_cursor(order: tuple[SortKey, ...], row: Mapping[str, Any]) -> str:
    values = []
    for key in order:
        value = row[key.field]
        if key.field == "size" and value is None:
            value = -1
        values.append(value.isoformat() if isinstance(value, dt.datetime) else value)
    payload = orjson.dumps({"o": _order_tag(order), "k": values, "id": str(row["id"])})
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


_INTEGERS = {"integer": range(-(2**31), 2**31), "bigint": range(-(2**63), 2**63)}
# Rows are stamped by now(); the first and last years are also where a shift to UTC overflows.
_TIMESTAMPS = (dt.datetime(2, 1, 1, tzinfo=dt.UTC), dt.datetime(9999, 1, 1, tzinfo=dt.UTC))


def _invalid(why: str) -> ApiError:
    return bad_request("invalid_cursor", f"cursor is not valid: {why}", "cursor")


def decode_cursor(cursor: str, order: tuple[SortKey, ...]) -> tuple[list[Any], uuid.UUID]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        tag, raw_values, raw_id = data["o"], data["k"], data["id"]
        last_id = uuid.UUID(raw_id if isinstance(raw_id, str) else "")
    except (binascii.Error, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        raise _invalid("it was not made by this service") from None
    if tag != _order_tag(order) or not isinstance(raw_values, list) or len(raw_values) != len(order):
        raise _invalid("it was made for another order_by")
    return [_key_value(key.field, raw) for key, raw in zip(order, raw_values, strict=True)], last_id


def _key_value(field: str, raw: Any) -> Any:
    """``raw`` as the value of sort key ``field``, if it is one a row could have."""
    kind = ORDERABLE[field][1]
    if kind in _INTEGERS:
        if isinstance(raw, int) and not isinstance(raw, bool) and raw in _INTEGERS[kind]:
            return raw
    elif kind == "timestamptz":
        if isinstance(raw, str):
            try:
                value = dt.datetime.fromisoformat(raw)
                if value.tzinfo is not None and _TIMESTAMPS[0] <= value < _TIMESTAMPS[1]:
                    return value.astimezone(dt.UTC)
            except (ValueError, OverflowError):
                pass
    # Text: Postgres holds no NUL (orjson has already refused lone surrogates).
    elif isinstance(raw, str) and len(raw) <= (FIELDS[field].max_length or 0) and "\x00" not in raw:
        return raw
    raise _invalid(f"bad value for {field}")


def order_sql(order: tuple[SortKey, ...]) -> str:
    parts = [f"{ORDERABLE[k.field][0]} {'DESC' if k.descending else 'ASC'}" for k in order]
    return ", ".join(parts + ["id ASC"])


def after_sql(order: tuple[SortKey, ...], values: list[Any], last_id: uuid.UUID, params: Params) -> str:
    """``WHERE`` clause for "strictly after this key" under a mixed-direction order; values bound in ``params``."""
    if order and not any(k.descending for k in order):
        # All ascending (the default order): a row comparison, which a btree uses to start the scan
        # right after the cursor (attachments_target_live: Index Cond, not a Filter over the earlier
        # pages). The keys are never null (NOT NULL columns or coalesced), so it is the same predicate.
        exprs = [ORDERABLE[k.field][0] for k in order]
        values_sql = [params.add(v) for v in values]
        return f"(({', '.join(exprs)}, id) > ({', '.join(values_sql)}, {params.add(last_id)}))"

    clause = f"id > {params.add(last_id)}"
    for key, value in reversed(list(zip(order, values, strict=True))):
        expr = ORDERABLE[key.field][0]
        p = params.add(value)
        op = "<" if key.descending else ">"
        clause = f"({expr} {op} {p} OR ({expr} = {p} AND {clause}))"
    return clause
