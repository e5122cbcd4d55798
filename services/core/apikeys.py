"""API keys, the pure part: their format and hash, what ``attachd keys create`` accepts, and whether a stored
key lets its bearer in.

A key is ``atk_`` and 43 characters of base62: 256 bits from ``secrets``, so a key is never taken for a JWT
(which starts ``eyJ``) and is selected whole by a double click. Only its SHA-256 is stored. A slow password
hash (bcrypt, argon2) is there to make guessing a low-entropy password from its hash costly; nobody can
guess 256 random bits whatever the hash costs, and an unsalted fast hash is what lets every request find
its key with one indexed lookup instead of trying a slow hash against every key of the account.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.core.auth import ACTOR_TYPES, READ, SCOPE_ALIASES, WRITE, Principal, normalize_scopes, unauthorized

KEY_PREFIX = "atk_"
_ALPHABET = string.digits + string.ascii_letters
_KEY_CHARS = 43  # 43 * log2(62) = 256.1 bits
_KEY_SHAPE = re.compile(rf"{KEY_PREFIX}[0-9A-Za-z]{{{_KEY_CHARS}}}")
# What a list shows to tell keys apart: the prefix and 8 characters (48 of the 256 bits; 208 stay unknown).
SHOWN_CHARS = len(KEY_PREFIX) + 8

KNOWN_SCOPES = frozenset({READ, WRITE, *SCOPE_ALIASES})
_PROFILE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_BINDING_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_DURATION = re.compile(r"(\d{1,6})([mhdw])")
_DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_NAME_CHARS = 200


def new_key() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(_KEY_CHARS))


def is_key(credential: str) -> bool:
    """Whether a credential is meant as an API key (else it is taken for a JWT)."""
    return credential.startswith(KEY_PREFIX)


def well_formed(key: str) -> bool:
    return _KEY_SHAPE.fullmatch(key) is not None


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def shown_part(key: str) -> str:
    return key[:SHOWN_CHARS]


# -- what `attachd keys create` accepts: each raises ValueError with the message to print ------------------


def parse_scopes(text: str) -> list[str]:
    """Space-separated scopes, the BookingSync aliases included; the rights they give, sorted."""
    given = text.split()
    if not given:
        raise ValueError("give at least one scope")
    if unknown := sorted(set(given) - KNOWN_SCOPES):
        raise ValueError(f"unknown scope {', '.join(unknown)}: use {', '.join(sorted(KNOWN_SCOPES))}")
    return sorted(normalize_scopes(given))


def parse_actor_type(text: str) -> str:
    if text not in ACTOR_TYPES:
        raise ValueError(f"the actor type must be one of {', '.join(ACTOR_TYPES)}")
    return text


def parse_profile(text: str) -> str:
    if not _PROFILE_NAME.fullmatch(text):
        raise ValueError("a profile is a lowercase name such as toggl or espocrm")
    return text


def parse_bindings(text: str) -> dict[str, str]:
    """``org=1,workspace=2`` -> ``{"org": "1", "workspace": "2"}``."""
    bindings: dict[str, str] = {}
    for item in text.split(","):
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not value:
            raise ValueError(f"{item.strip() or 'an empty item'}: write each binding as name=value")
        if not _BINDING_NAME.fullmatch(name):
            raise ValueError(f"{name or 'an empty name'}: a binding's name is lowercase letters, digits and _")
        if name in bindings:
            raise ValueError(f"{name} is bound twice")
        bindings[name] = value
    return bindings


def parse_expiry(text: str, now: dt.datetime) -> dt.datetime:
    """``90d`` (also m, h, w) from ``now``, or an ISO 8601 date-time with its offset; in the future."""
    if match := _DURATION.fullmatch(text.strip()):
        expires = now + dt.timedelta(**{_DURATION_UNITS[match[2]]: int(match[1])})
    else:
        try:
            expires = dt.datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(
                f"{text!r}: give a duration (30m, 12h, 90d, 8w) or a date-time such as 2027-01-01T00:00:00Z"
            ) from None
        if expires.tzinfo is None:
            raise ValueError(f"{text!r}: give the date-time's offset (Z or +02:00)")
    if expires <= now:
        raise ValueError(f"{text!r} is not in the future")
    return expires


def parse_name(text: str) -> str:
    name = text.strip()
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise ValueError(f"a name is 1 to {MAX_NAME_CHARS} printable characters")
    return name


# -- whether a stored key lets its bearer in ---------------------------------------------------------------


@dataclass(frozen=True)
class StoredKey:
    """A key's row, without its hash."""

    id: int
    account_id: str
    actor_type: str
    actor_id: str
    scopes: frozenset[str]
    profile: str | None = None
    bindings: Mapping[str, str] = field(default_factory=dict)
    expires_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None


def principal_of(key: StoredKey, *, now: dt.datetime, profile: str | None) -> Principal:
    """The key's principal where it is presented (``profile``: the compat profile asking, None: native
    ``/v1``); raises 401 for a revoked or expired key, or one limited to another profile."""
    if key.revoked_at is not None:
        raise unauthorized("the API key has been revoked")
    if key.expires_at is not None and key.expires_at <= now:
        raise unauthorized("the API key has expired")
    if key.profile is not None and key.profile != profile:
        raise unauthorized(f"this API key is limited to the {key.profile} compatibility profile")
    return Principal(
        account_id=key.account_id,
        actor_type=key.actor_type,
        actor_id=key.actor_id,
        scopes=key.scopes,
        profile=key.profile,
        bindings=dict(key.bindings),
    )
