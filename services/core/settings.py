"""One settings object, read from ``ATTACHD_*`` environment variables.

Every default is safe: the URL fetcher refuses private networks, uploads are
capped, the JWT secret has no default outside ``attachd dev``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.core.mediatypes import DEFAULT_ALLOWED_EXTENSIONS
from services.core.urlpolicy import parse_allow_cidrs

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Settings:
    database_url: str = "postgresql://localhost/attachd"
    redis_url: str = "redis://localhost:6379/0"
    storage_url: str = "file:///var/lib/attachd"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    jwt_secret: str = ""
    jwt_public_key: str = ""  # PEM; when set, RS256 tokens are accepted too
    signing_secret: str = ""  # download-link HMAC key; derived from jwt_secret when empty
    public_url: str = ""  # base of signed links; the request's origin when empty
    max_file_bytes: int = 25 * 1024 * 1024
    max_json_bytes: int = 48 * 1024 * 1024  # a JSON body carries base64 (4/3 of the bytes)
    max_files_per_request: int = 10
    byte_budget: int = 10_000_000  # per account and window; 0 turns the budget off
    byte_budget_window_s: int = 300
    byte_budget_lockout_s: int = 300
    allowed_extensions: frozenset[str] = DEFAULT_ALLOWED_EXTENSIONS
    max_image_pixels: int = 100_000_000
    sync_wait_s: float = 30.0
    fetch_allow_cidrs: tuple[IPNetwork, ...] = ()
    fetch_connect_timeout_s: float = 5.0
    fetch_total_timeout_s: float = 60.0
    link_ttl_s: int = 3600
    job_timeout_s: int = 300
    worker_concurrency: int = 8
    # Decode memory a worker may have in flight (workers/media.py DecodeBudget); the pod's limit is 512 MiB.
    decode_budget_bytes: int = 200 << 20
    staging_grace_s: int = 900
    session_idle_s: int = 600  # an upload session with no upload for this long is closed
    relay_interval_s: float = 0.2  # how often a worker polls the outbox; 0: this worker does not relay
    events_maxlen: int = 1_000_000  # approximate cap of the attachd:events stream
    unlinked_ttl_s: int = 24 * 3600
    # Parent types whose attachments cannot have nested attachments (Autotask's list), as data.
    no_nesting_types: frozenset[str] = frozenset(
        {"Account", "SalesOrder", "ExpenseReport", "Resource", "AccountNote", "ContractNote", "Project", "ProjectNote"}
    )
    body_read_timeout_s: float = 300.0
    shutdown_grace_s: float = 25.0
    host: str = "0.0.0.0"
    port: int = 8080

    @property
    def link_secret(self) -> bytes:
        if self.signing_secret:
            return self.signing_secret.encode()
        if not self.jwt_secret:
            raise RuntimeError("ATTACHD_SIGNING_SECRET or ATTACHD_JWT_SECRET must be set")
        return hmac.new(self.jwt_secret.encode(), b"attachd download links", hashlib.sha256).digest()

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **changes)


_PARSERS = {
    "max_file_bytes": int,
    "max_json_bytes": int,
    "max_files_per_request": int,
    "byte_budget": int,
    "byte_budget_window_s": int,
    "byte_budget_lockout_s": int,
    "max_image_pixels": int,
    "sync_wait_s": float,
    "fetch_connect_timeout_s": float,
    "fetch_total_timeout_s": float,
    "link_ttl_s": int,
    "job_timeout_s": int,
    "worker_concurrency": int,
    "decode_budget_bytes": int,
    "staging_grace_s": int,
    "session_idle_s": int,
    "relay_interval_s": float,
    "events_maxlen": int,
    "unlinked_ttl_s": int,
    "no_nesting_types": lambda v: frozenset(t.strip() for t in v.split(",") if t.strip()),
    "body_read_timeout_s": float,
    "shutdown_grace_s": float,
    "port": int,
    "allowed_extensions": lambda v: frozenset(e.strip().lower().lstrip(".") for e in v.split(",") if e.strip()),
    "fetch_allow_cidrs": parse_allow_cidrs,
}


def load_settings(environ: Mapping[str, str] | None = None, **overrides) -> Settings:
    """Settings from ``ATTACHD_<FIELD>`` variables; ``overrides`` win over the environment."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for f in dataclasses.fields(Settings):
        raw = env.get(f"ATTACHD_{f.name.upper()}")
        if raw is None:
            continue
        parse = _PARSERS.get(f.name, str)
        try:
            values[f.name] = parse(raw)
        except ValueError as exc:
            raise ValueError(f"ATTACHD_{f.name.upper()}: {exc}") from None
    values.update(overrides)
    return Settings(**values)
