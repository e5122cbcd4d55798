"""One settings object, read from ``ATTACHD_*`` environment variables.

Every default is safe: the URL fetcher refuses private networks, uploads are
capped, the JWT secret has no default outside ``attachd dev``.

Each setting is defined once, below: its type, its default and one line of
documentation (:func:`setting`). Its parser follows from its type (or is given);
``docs/settings.md`` is generated from the same definitions::

    python -m services.core.settings --markdown > docs/settings.md
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import hmac
import ipaddress
import logging
import os
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, get_args, get_type_hints

from services.core.logs import parse_format
from services.core.mediatypes import DEFAULT_ALLOWED_EXTENSIONS
from services.core.urlpolicy import parse_allow_cidrs

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
PREFIX = "ATTACHD_"

log = logging.getLogger("attachd.settings")
_T = TypeVar("_T")


def setting(default: _T, doc: str, *, parse: Callable[[str], _T] | None = None) -> _T:
    """A field of :class:`Settings`: its default, one line saying what it does and, when its type's
    parser is not the right one, its own ``parse``."""
    metadata: dict[str, object] = {"doc": doc}
    if parse is not None:
        metadata["parse"] = parse
    return dataclasses.field(default=default, metadata=metadata)


# Parent types whose attachments cannot have nested attachments in Autotask.
_AUTOTASK_NO_NESTING = frozenset(
    {"Account", "SalesOrder", "ExpenseReport", "Resource", "AccountNote", "ContractNote", "Project", "ProjectNote"}
)


S3_MIN_PART = 5 * 1024 * 1024


def _s3_part_bytes(text: str) -> int:
    value = int(text)
    if value < S3_MIN_PART:
        raise ValueError(f"must be at least {S3_MIN_PART} (S3's smallest part)")
    return value


def _extensions(text: str) -> frozenset[str]:
    return frozenset(e.strip().lower().lstrip(".") for e in text.split(",") if e.strip())


@dataclass(frozen=True)
class Settings:
    database_url: str = setting(
        "postgresql://localhost/attachd",
        "Postgres connection URL; `attachd migrate` applies the schema migrations to it.",
    )
    redis_url: str = setting(
        "redis://localhost:6379/0",
        "Redis URL: the job queue, job outcomes, the byte budget and the `attachd:events` stream"
        " (run it with AOF persistence).",
    )
    storage_url: str = setting(
        "file:///var/lib/attachd", "Where files are kept: `file:///path` or `s3://bucket/prefix`."
    )
    s3_endpoint_url: str | None = setting(
        None,
        "An S3-compatible server for `s3://` storage; empty: AWS. Credentials come from the usual `AWS_*` variables.",
    )
    s3_region: str = setting("us-east-1", "Region of the `s3://` bucket.")
    jwt_secret: str = setting(
        "",
        "HS256 secret bearer tokens are verified with (this or `ATTACHD_JWT_PUBLIC_KEY` is required);"
        " download links are signed with a key derived from it unless `ATTACHD_SIGNING_SECRET` is set.",
    )
    jwt_public_key: str = setting(
        "", "RS256 public key (PEM) bearer tokens are verified with, besides or instead of `ATTACHD_JWT_SECRET`."
    )
    signing_secret: str = setting(
        "", "HMAC key of the signed download links; empty: derived from `ATTACHD_JWT_SECRET`."
    )
    public_url: str = setting(
        "",
        "Base URL of the signed links in responses (`https://files.example.com`), and of the links back to the"
        " part that answers (a tus upload's URL, a profile's next page) when the request came by its host;"
        " empty: the request's own scheme and host.",
    )
    max_file_bytes: int = setting(
        25 * 1024 * 1024,
        "Largest file, in bytes, held against both its declared and its actual size"
        " (`attachd limits` sets an account's own).",
    )
    max_json_bytes: int = setting(
        48 * 1024 * 1024,
        "Largest JSON request body, in bytes (base64 makes a file 4/3 its size);"
        " also the limit of any other body read whole.",
    )
    max_files_per_request: int = setting(10, "Most attachments one create request may carry (parts or items).")
    byte_budget: int = setting(
        0,
        "Bytes an account may upload per window, counted in Redis across every ingress; past it uploads get 429"
        " with `Retry-After`. 0 (the default): no window; `attachd limits --byte-budget` turns one on for an"
        " account (Autotask's 10,000,000 bytes per 300 s is the Autotask profile's own, per integration).",
    )
    byte_budget_window_s: int = setting(
        300, "The byte budget's sliding window, in seconds (`attachd limits` sets an account's own)."
    )
    byte_budget_lockout_s: int = setting(
        300,
        "How long, in seconds, an account's uploads stay refused once it has exceeded the byte budget"
        " (`attachd limits` sets an account's own).",
    )
    allowed_extensions: frozenset[str] = setting(
        DEFAULT_ALLOWED_EXTENSIONS,
        "File-name extensions an upload may have (case and a leading dot ignored). A known one's content must"
        " match it (a .png is a PNG); another accepts any content but HTML, SVG and XML.",
        parse=_extensions,
    )
    max_image_pixels: int = setting(
        100_000_000,
        "Largest image, in pixels (width × height), checked from its header before decoding; larger is refused.",
    )
    sync_wait_s: float = setting(
        30.0, "How long, in seconds, a write waits for its worker before answering 202 with a status URL."
    )
    fetch_allow_cidrs: tuple[IPNetwork, ...] = setting(
        (), "Networks the URL fetcher may reach although they are not public (loopback, private, link-local…)."
    )
    fetch_connect_timeout_s: float = setting(
        5.0, "Timeout, in seconds, of resolving and connecting to each host a URL fetch reaches."
    )
    fetch_total_timeout_s: float = setting(
        60.0, "How long, in seconds, a URL fetch may take in all, redirects and download included."
    )
    link_ttl_s: int = setting(
        3600, "Lifetime of signed download links, in seconds (rounded up to a 5-minute step, so links cache well)."
    )
    tmp_dir: str = setting(
        "",
        "Directory for the worker's temporary files (fetched and decoded bytes); empty: the system's "
        "($TMPDIR, else /tmp). Under a read-only root filesystem, point it at a writable volume.",
    )
    job_timeout_s: int = setting(300, "How long, in seconds, an ingest job may run before the worker cancels it.")
    worker_concurrency: int = setting(
        8,
        "Jobs a worker process runs at once; also the items of one job prepared side by side,"
        " and the size of the worker's Postgres pool (at least 4).",
    )
    # A worker's baseline is ~40 MB and the pod's limit 512 MiB: two 100-MP progressive photos on the media
    # threads (330 MB each) cannot take it down (workers/media.py DecodeBudget).
    decode_budget_bytes: int = setting(
        200 << 20,
        "Image-decode memory a worker may have in flight, in bytes: decodes that cannot shrink on load"
        " (progressive JPEG, HEIF/AVIF) wait for room; one larger than the budget runs alone.",
    )
    staging_grace_s: int = setting(
        900,
        "Age, in seconds, after which the sweeper re-enqueues a staged upload whose job Redis lost"
        " and deletes the bytes of one that never finished arriving.",
    )
    tus_expiry_s: int = setting(
        24 * 3600,
        "A resumable (tus) upload that receives no byte for this long, in seconds, expires: the sweeper"
        " deletes its bytes (and aborts its S3 multipart upload).",
    )
    tus_part_bytes: int = setting(
        5 * 1024 * 1024,
        "Bytes per S3 part of a resumable (tus) upload (at least S3's 5 MiB; more when a file needs over"
        " 10,000 parts), and between the durable checkpoints of a long PATCH with file storage.",
        parse=_s3_part_bytes,
    )
    session_idle_s: int = setting(
        600, "An upload session with no upload for this long, in seconds, is closed (and announced)."
    )
    relay_interval_s: float = setting(
        0.2,
        "How often, in seconds, each worker copies new events from the outbox to `attachd:events`;"
        " 0: this worker relays none.",
    )
    events_maxlen: int = setting(1_000_000, "The `attachd:events` stream is trimmed to about this many entries.")
    unlinked_ttl_s: int = setting(
        24 * 3600,
        "How long, in seconds, an upload may wait to be linked to a target, from when it was made or unlinked,"
        " before it is purged.",
    )
    no_nesting_types: frozenset[str] = setting(
        _AUTOTASK_NO_NESTING,
        "Target types whose attachments cannot have nested attachments (Autotask's list by default).",
    )
    body_read_timeout_s: float = setting(
        300.0,
        "How long, in seconds, a service waits for a whole request body (an upload, any JSON) before answering 408.",
    )
    header_timeout_s: float = setting(
        10.0,
        "How long, in seconds, a client has to send a request's line and headers in full, from when its"
        " connection opens or from the first byte of a later request on it; past it: 408, and the connection closes.",
    )
    keepalive_timeout_s: float = setting(
        75.0, "How long, in seconds, an idle keep-alive connection stays open waiting for its next request."
    )
    shutdown_grace_s: float = setting(
        25.0, "On SIGTERM, how long, in seconds, requests in flight and a worker's running jobs get to finish."
    )
    log_format: str = setting(
        "json",
        "`json`: one JSON object per log line (`ts`, `level`, `logger`, `msg`, `request_id`, `account`,"
        " `attachment_id`…); `text`: plain lines. Unset, `attachd dev`, `token` and `limits` log text.",
        parse=parse_format,
    )
    host: str = setting("0.0.0.0", "Address the ingress and query services listen on.")
    port: int = setting(8080, "Port the ingress and query services listen on (their `--port` wins).")
    console: bool = setting(
        False,
        "Serve the upload console at `/console` (from the ingress, and from `attachd dev`, where it is on unless"
        " this says `false`).",
    )

    @property
    def link_secret(self) -> bytes:
        if self.signing_secret:
            return self.signing_secret.encode()
        if not self.jwt_secret:
            raise RuntimeError("ATTACHD_SIGNING_SECRET or ATTACHD_JWT_SECRET must be set")
        return hmac.new(self.jwt_secret.encode(), b"attachd download links", hashlib.sha256).digest()

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


# Variables that are not settings but are read on purpose: they never warn.
OTHER_VARIABLES: Mapping[str, str] = types.MappingProxyType(
    {
        "ATTACHD_LOG_LEVEL": "Log level of every `attachd` command (`DEBUG`, `INFO`, `WARNING`…); default `INFO`.",
        "ATTACHD_EVENT_LOOP": "`asyncio`: the query service runs on the standard event loop instead of uvloop.",
        "ATTACHD_TOKEN": "The credential (a JWT or an API key) of `attachd upload`, `ls`, `get` and `rm`;"
        " `attachd dev` prints an `export ATTACHD_TOKEN=…` line for your shell.",
        "ATTACHD_URL": "Where `attachd upload`, `ls`, `get` and `rm` reach attachd; default `http://127.0.0.1:8080`.",
    }
)
# The test suite's and the benchmarks' own variables.
OTHER_PREFIXES = ("ATTACHD_TEST_", "ATTACHD_BENCH_")


def _comma_set(text: str) -> frozenset[str]:
    return frozenset(item.strip() for item in text.split(",") if item.strip())


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, not {text!r}")


# Each type a setting may have: how it is named in the docs and parsed from its variable.
_TYPES: dict[Any, tuple[str, Callable[[str], Any]]] = {
    str: ("string", str),
    int: ("integer", int),
    float: ("number", float),
    bool: ("boolean", _boolean),
    frozenset[str]: ("comma-separated list", _comma_set),
    tuple[IPNetwork, ...]: ("comma-separated CIDRs", parse_allow_cidrs),
}


@dataclass(frozen=True)
class Spec:
    """What the environment and the docs need to know of one setting."""

    name: str
    variable: str
    type_name: str
    default: object
    parse: Callable[[str], object]
    doc: str


def _type_of(hint: Any) -> tuple[str, Callable[[str], Any]] | None:
    if hint in _TYPES:
        return _TYPES[hint]
    args = get_args(hint)
    if isinstance(hint, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = _type_of(next(arg for arg in args if arg is not type(None)))
        if inner is None:
            return None
        name, parse = inner

        def optional(text: str) -> Any:
            return parse(text) if text else None

        return name, optional
    return None


def specs(cls: type[Any] = Settings) -> tuple[Spec, ...]:
    """Every field of a settings dataclass with its variable, type, default, parser and doc.

    Raises :class:`TypeError` for a field without a default, a one-line doc or a parser.
    """
    hints = get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        doc = f.metadata.get("doc", "")
        if not doc.strip() or "\n" in doc or f.default is dataclasses.MISSING:
            raise TypeError(f"setting {f.name} needs a default and a one-line doc: use setting(default, doc)")
        known = _type_of(hints[f.name])
        if known is None and "parse" not in f.metadata:
            raise TypeError(f"setting {f.name}: no parser for {hints[f.name]}; give setting(..., parse=)")
        type_name, parse = known or (str(f.type), str)
        out.append(
            Spec(f.name, PREFIX + f.name.upper(), type_name, f.default, f.metadata.get("parse", parse), doc.strip())
        )
    return tuple(out)


SPECS = specs()
_SPEC_BY_VARIABLE = {spec.variable: spec for spec in SPECS}
KNOWN_VARIABLES = frozenset(_SPEC_BY_VARIABLE) | frozenset(OTHER_VARIABLES)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """The ``ATTACHD_*`` names in ``environ`` that attachd does not read (a typo, most likely)."""
    return sorted(
        name
        for name in environ
        if name.startswith(PREFIX) and name not in KNOWN_VARIABLES and not name.startswith(OTHER_PREFIXES)
    )


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from ``ATTACHD_<FIELD>`` variables; ``overrides`` win over the environment.

    An ``ATTACHD_*`` variable that is neither a setting nor one of :data:`OTHER_VARIABLES` is logged
    as a warning: a misspelt setting must not pass for its default unnoticed.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for spec in SPECS:
        raw = env.get(spec.variable)
        if raw is None:
            continue
        try:
            values[spec.name] = spec.parse(raw)
        except ValueError as exc:
            raise ValueError(f"{spec.variable}: {exc}") from None
    if unknown := unknown_variables(env):
        log.warning("ignoring unknown environment variables: %s", ", ".join(map(_with_suggestion, unknown)))
    values.update(overrides)
    return Settings(**values)


def _with_suggestion(name: str) -> str:
    # Compared without the prefix they all share, which would make anything look close.
    close = difflib.get_close_matches(name.removeprefix(PREFIX), [v.removeprefix(PREFIX) for v in KNOWN_VARIABLES], n=1)
    return f"{name} (did you mean {PREFIX}{close[0]}?)" if close else name


def _shown(value: object) -> str:
    """A default as it would be written in its variable."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, frozenset):
        return ",".join(sorted(str(item) for item in value))
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown() -> str:
    """``docs/settings.md``: every setting and every other variable, from their definitions."""
    lines = [
        "# Settings",
        "",
        "<!-- Generated from services/core/settings.py by"
        " `python -m services.core.settings --markdown > docs/settings.md`; edit the definitions there. -->",
        "",
        "attachd reads its settings from `ATTACHD_*` environment variables; every default is safe."
        " An `ATTACHD_*` variable it does not know is logged as a warning when the settings are loaded.",
        "",
        "| variable | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for spec in SPECS:
        shown = _shown(spec.default)
        default = f"`{_cell(shown)}`" if shown else "empty"
        lines.append(f"| `{spec.variable}` | {spec.type_name} | {default} | {_cell(spec.doc)} |")
    lines += [
        "",
        "## Other variables",
        "",
        "Not settings, but meant to be set: the `attachd` command reads the first two itself."
        f" Names starting with {' or '.join(f'`{p}`' for p in OTHER_PREFIXES)} belong to the tests and benchmarks.",
        "",
        "| variable | meaning |",
        "|---|---|",
        *(f"| `{name}` | {_cell(doc)} |" for name, doc in OTHER_VARIABLES.items()),
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.core.settings", description="attachd's settings")
    parser.add_argument("--markdown", action="store_true", required=True, help="print docs/settings.md")
    parser.parse_args(argv)
    sys.stdout.write(markdown())


if __name__ == "__main__":
    main()
