"""Who is calling, for which account, with which rights: the principal, and bearer JWTs (PyJWT). API keys,
the other credential, are services.core.apikeys."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import jwt

from services.core.errors import ApiError
from services.core.validation import parse_account_id

READ = "attachments:read"
WRITE = "attachments:write"
# The BookingSync seed's scopes mean the same rights.
SCOPE_ALIASES = {"task_management_read": READ, "task_management_write": WRITE}
# Writing implies reading, as in the seed ("task_management_read / task_management_write" may list).
IMPLIED = {WRITE: {READ}}
ACTOR_TYPES = ("User", "Application", "Contact", "Resource")
_VERIFIED_MAX = 10_000


@dataclass(frozen=True)
class Principal:
    account_id: str
    actor_type: str
    actor_id: str
    scopes: frozenset[str]
    # An API key's: the compat profile it is limited to (None: any), and the path values it is bound to
    # (Toggl's organization and workspace, ...).
    profile: str | None = None
    bindings: Mapping[str, str] = field(default_factory=dict)

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise ApiError(
                "insufficient_scope",
                f"the credential lacks the {scope} scope",
                status=403,
                headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
            )


def unauthorized(message: str) -> ApiError:
    return ApiError("unauthorized", message, status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def normalize_scopes(raw: object) -> frozenset[str]:
    items = raw.split() if isinstance(raw, str) else list(raw) if isinstance(raw, (list, tuple)) else []
    scopes = {SCOPE_ALIASES.get(s, s) for s in items if isinstance(s, str)}
    for scope in list(scopes):
        scopes |= IMPLIED.get(scope, set())
    return frozenset(scopes)


class TokenVerifier:
    def __init__(self, secret: str = "", public_key: str = "", leeway_s: int = 30) -> None:
        if not secret and not public_key:
            raise RuntimeError("ATTACHD_JWT_SECRET or ATTACHD_JWT_PUBLIC_KEY must be set")
        self._keys = []
        if secret:
            self._keys.append((secret, ["HS256"]))
        if public_key:
            self._keys.append((public_key, ["RS256"]))
        self._leeway = leeway_s
        # token -> (principal, valid until): a token verified once is not decoded again while it lasts.
        self._verified: dict[str, tuple[Principal, float]] = {}

    def verify(self, token: str) -> Principal:
        """The token's principal. A token verified before is taken from a bounded cache until its
        ``exp`` (plus the leeway) passes, as PyJWT would judge it: it has the same key, and its
        ``nbf`` and ``iat`` stay passed once passed."""
        known = self._verified.get(token)
        if known is not None:
            if time.time() < known[1]:
                return known[0]
            del self._verified[token]
        principal, valid_until = self._decode(token)
        if len(self._verified) >= _VERIFIED_MAX:
            del self._verified[next(iter(self._verified))]  # the oldest
        self._verified[token] = (principal, valid_until)
        return principal

    def _decode(self, token: str) -> tuple[Principal, float]:
        claims = None
        error = "the token is invalid"
        for key, algorithms in self._keys:
            try:
                claims = jwt.decode(
                    token, key, algorithms=algorithms, leeway=self._leeway, options={"require": ["account", "sub"]}
                )
                break
            except jwt.ExpiredSignatureError:
                error = "the token has expired"
            except jwt.InvalidTokenError as exc:
                error = f"the token is invalid: {exc}"
        if claims is None:
            raise unauthorized(error)
        actor_type = claims.get("sub_type", "User")
        if actor_type not in ACTOR_TYPES:
            raise unauthorized(f"sub_type must be one of {', '.join(ACTOR_TYPES)}")
        try:
            account = parse_account_id(claims["account"])
        except ApiError as exc:
            raise unauthorized(exc.message) from None
        exp = claims.get("exp")
        # PyJWT has checked that int(exp) works and that exp > now - leeway.
        valid_until = int(exp) + self._leeway if exp is not None else math.inf
        return Principal(
            account_id=account,
            actor_type=actor_type,
            actor_id=str(claims["sub"]),
            scopes=normalize_scopes(claims.get("scope", "")),
        ), valid_until


def mint_token(
    secret: str,
    *,
    account: str,
    sub: str = "dev",
    sub_type: str = "User",
    scope: str = f"{READ} {WRITE}",
    ttl_s: int = 30 * 24 * 3600,
    now: float | None = None,
) -> str:
    issued = int(time.time() if now is None else now)
    claims = {
        "account": account,
        "sub": sub,
        "sub_type": sub_type,
        "scope": scope,
        "iat": issued,
        "exp": issued + ttl_s,
    }
    return jwt.encode(claims, secret, algorithm="HS256")
