"""Logs: one line per event, JSON or text, with the request's or the job's ids on every line.

What a request or a job is about (``request_id``, ``account``, ``attachment_id``, ``job_id``) is bound
once, in a context variable (:func:`bind`), where it is known: the HTTP server binds the request id, the
token check the account, the worker the job's ids. Every line logged afterwards in that request's or
job's task carries them, whichever module logs it; a task started from there inherits them.

``ATTACHD_LOG_FORMAT`` picks the format (:func:`configure`): ``json``, one object per line
(``ts``, ``level``, ``logger``, ``msg``, the bound ids, then what the call passed in ``extra=``, and
``exc`` with the traceback), or ``text`` for people (``attachd dev``).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import logging
import sys
import types
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

import orjson

FORMATS = ("json", "text")
# The ids a line may carry, in the order they are written.
CONTEXT_FIELDS = ("request_id", "account", "attachment_id", "job_id")

_EMPTY: Mapping[str, str] = types.MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("attachd_log_context", default=_EMPTY)

# What every LogRecord has: anything else on a record came from ``extra=`` and is written too.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def bind(**fields: str | None) -> None:
    """Add ``fields`` to what this task's log lines carry (None removes one); tasks started later inherit it."""
    merged = dict(_context.get())
    for name, value in fields.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    _context.set(types.MappingProxyType(merged))


@contextlib.contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """:func:`bind` for the block only."""
    token = _context.set(_context.get())
    bind(**fields)
    try:
        yield
    finally:
        _context.reset(token)


def current() -> Mapping[str, str]:
    """The fields bound in this context."""
    return _context.get()


def get(name: str) -> str | None:
    return _context.get().get(name)


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRIBUTES and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(current())
        line.update(_extra(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """The classic line, with the bound ids after the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = {**current(), **{k: v for k, v in _extra(record).items() if k in CONTEXT_FIELDS}}
        if not fields:
            return text
        ids = " ".join(f"{name}={fields[name]}" for name in CONTEXT_FIELDS if name in fields)
        head, newline, rest = text.partition("\n")  # after the message, before a traceback
        return f"{head} [{ids}]{newline}{rest}"


def parse_format(text: str) -> str:
    value = text.strip().lower()
    if value not in FORMATS:
        raise ValueError(f"expected one of {', '.join(FORMATS)}, not {text!r}")
    return value


HANDLER_NAME = "attachd"


def configure(log_format: str, level: str | int = "INFO", stream: TextIO | None = None) -> None:
    """Every logger of the process writes to ``stream`` (stderr) in ``log_format``, from ``level`` up."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if parse_format(log_format) == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
