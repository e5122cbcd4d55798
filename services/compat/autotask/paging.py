"""Autotask's ``pageDetails``: the native forward cursors behind ``nextPageUrl`` and ``prevPageUrl``. Pure.

A page's ``paging`` token is the list of native cursors that led to it (page 1 has none), so the previous
page's token is the list without its last cursor. Only the last ``KEPT`` cursors are kept (URLs stay
short); past them ``prevPageUrl`` is null, as on the first page.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import urlencode

import orjson

from services.compat.autotask.translate import error

KEPT = 20


@dataclass(frozen=True)
class Paging:
    cursors: tuple[str, ...] = ()  # the cursors that led to this page
    complete: bool = True  # False: older cursors were dropped, so there is no way back past the first kept

    @property
    def cursor(self) -> str | None:
        return self.cursors[-1] if self.cursors else None


def decode(token: str | None) -> Paging:
    if not token:
        return Paging()
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(token.encode("ascii") + b"=" * (-len(token) % 4)))
        cursors, complete = raw["c"], raw["k"]
        if not (isinstance(cursors, list) and cursors and all(isinstance(c, str) for c in cursors)):
            raise ValueError
        return Paging(tuple(cursors), bool(complete))
    except (ValueError, TypeError, KeyError, UnicodeEncodeError, binascii.Error, orjson.JSONDecodeError):
        raise error("paging is not a token this API returned", field="paging") from None


def _encode(paging: Paging) -> str:
    raw = orjson.dumps({"c": list(paging.cursors), "k": paging.complete})
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _url(page_url: str, params: dict[str, str], paging: Paging | None) -> str:
    query = dict(params)
    if paging is not None and paging.cursors:
        query["paging"] = _encode(paging)
    return f"{page_url}?{urlencode(query)}" if query else page_url


def page_details(
    page_url: str, params: dict[str, str], current: Paging, next_cursor: str | None, count: int, request_count: int
) -> dict[str, object]:
    """``{"count", "requestCount", "prevPageUrl", "nextPageUrl"}`` of a page: ``page_url`` with ``params``
    (the query's ``search``) and the ``paging`` token of the page before and after this one."""
    next_url = None
    if next_cursor is not None:
        cursors = (*current.cursors, next_cursor)
        nxt = Paging(cursors[-KEPT:], current.complete and len(cursors) <= KEPT)
        next_url = _url(page_url, params, nxt)
    prev_url = None
    if current.cursors and (current.complete or len(current.cursors) > 1):
        prev_url = _url(page_url, params, Paging(current.cursors[:-1], current.complete))
    return {"count": count, "requestCount": request_count, "prevPageUrl": prev_url, "nextPageUrl": next_url}
