"""What a service checks before it listens, and how it says what stopped it: one line, no traceback.

``attachd ingress``, ``query`` and ``worker`` refuse to start with a JWT or signing secret shorter than
:data:`MIN_SECRET_BYTES` (exit code 2), and name the dependency they cannot reach at start-up (Postgres,
Redis, storage) with its URL, its password left out (exit code 1).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from services.core.settings import Settings

MIN_SECRET_BYTES = 32
CONFIG_EXIT = 2  # a setting is wrong: starting again will not help
UNREACHABLE_EXIT = 1
# Query parameters of a database or Redis URL that hold a secret.
_SECRET_PARAMETERS = frozenset({"password", "sslpassword", "passfile"})
_T = TypeVar("_T")


class StartupError(Exception):
    """Why a service will not start, said in one line; ``exit_code`` is what the process exits with."""

    def __init__(self, message: str, exit_code: int = UNREACHABLE_EXIT) -> None:
        super().__init__(" ".join(message.split()))
        self.exit_code = exit_code


def check_secrets(settings: Settings, *, signs_links: bool = True) -> None:
    """Raise :class:`StartupError` (exit code 2) for a secret too short to resist guessing, or a missing one."""
    for variable, value in (
        ("ATTACHD_JWT_SECRET", settings.jwt_secret),
        ("ATTACHD_SIGNING_SECRET", settings.signing_secret),
    ):
        size = len(value.encode())
        if value and size < MIN_SECRET_BYTES:
            raise StartupError(
                f"{variable} is {size} bytes long; it must be at least {MIN_SECRET_BYTES} bytes"
                " (make one with `openssl rand -base64 48`)",
                CONFIG_EXIT,
            )
    if not settings.jwt_secret and not settings.jwt_public_key:
        raise StartupError(
            f"set ATTACHD_JWT_SECRET (at least {MIN_SECRET_BYTES} bytes) or ATTACHD_JWT_PUBLIC_KEY", CONFIG_EXIT
        )
    if signs_links and not settings.jwt_secret and not settings.signing_secret:
        raise StartupError(
            f"set ATTACHD_SIGNING_SECRET (at least {MIN_SECRET_BYTES} bytes): download links need a key"
            " when tokens are verified with ATTACHD_JWT_PUBLIC_KEY only",
            CONFIG_EXIT,
        )


def redacted_url(url: str) -> str:
    """``url`` without its password (in the user part or the query string)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            user, _, host = netloc.rpartition("@")
            name = user.partition(":")[0]
            netloc = f"{name}@{host}" if name else host
        query = parts.query
        if query:
            kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k.lower() not in _SECRET_PARAMETERS]
            query = urlencode(kept)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "(a malformed URL)"


def unreachable(component: str, url: str, exc: BaseException) -> StartupError:
    """The one line saying which dependency could not be reached at start-up, and why."""
    reason = str(exc) or type(exc).__name__
    return StartupError(f"cannot reach {component} at {redacted_url(url)}: {reason}", UNREACHABLE_EXIT)


async def reach(component: str, url: str, opening: Awaitable[_T]) -> _T:
    """Await ``opening`` (a connection, a pool); whatever it raises becomes the one line of :func:`unreachable`."""
    try:
        return await opening
    except StartupError:
        raise
    except Exception as exc:
        raise unreachable(component, url, exc) from exc
