"""The per-account byte budget: a sliding window of uploaded bytes, kept in Redis for every ingress replica.

An account may upload ``byte_budget`` bytes per ``byte_budget_window_s`` seconds; the upload that would
pass it is refused and locks the account's uploads out for ``byte_budget_lockout_s`` seconds (Autotask's
10,000,000 bytes per five minutes, then five minutes of refusals). One Lua script decides each charge, so
replicas never race. Its keys (the braces are a Redis Cluster hash tag: the three share a slot):

- ``attachd:budget:{<account>}``: sorted set of charges, member ``<charge id>:<bytes>``, score = time in ms;
- ``attachd:budget:{<account>}:total``: the bytes in the window, kept as a running total;
- ``attachd:budget:{<account>}:lockout``: present, with a TTL, while the account is locked out.

Per-account overrides of the limits live in the hash ``attachd:limits:<account>`` (``attachd limits``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from services.core import encoding
from services.core.errors import ApiError
from services.core.settings import Settings

log = logging.getLogger("attachd.budget")

# The per-account limits, as named in Settings and in the override hash, with their smallest valid value.
LIMIT_MINIMUMS = {"byte_budget": 0, "byte_budget_window_s": 1, "byte_budget_lockout_s": 0, "max_file_bytes": 1}

# KEYS: charges, total, lockout. ARGV: member, bytes, limit, window ms, lockout ms.
# Returns {allowed (1|0), retry after ms, bytes in the window}.
_CHARGE = """
local charges, total_key, lockout_key = KEYS[1], KEYS[2], KEYS[3]
local member, bytes, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local window, lockout = tonumber(ARGV[4]), tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - window
local function size(m) return tonumber(string.match(m, ':(%d+)$')) end

-- Each charge leaves the window once, so keeping a running total makes a charge O(log n).
local total = tonumber(redis.call('GET', total_key))
if redis.call('EXISTS', charges) == 0 then
  total = 0
elseif total then
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', charges, '-inf', cutoff)) do total = total - size(m) end
  redis.call('ZREMRANGEBYSCORE', charges, '-inf', cutoff)
else  -- the total was lost: count again
  redis.call('ZREMRANGEBYSCORE', charges, '-inf', cutoff)
  total = 0
  for _, m in ipairs(redis.call('ZRANGE', charges, 0, -1)) do total = total + size(m) end
end

local allowed, retry = 1, 0
local locked = redis.call('PTTL', lockout_key)
if locked > 0 then
  allowed, retry = 0, locked
elseif redis.call('ZSCORE', charges, member) then
  -- charged before (a retry): allowed, and not counted twice
elseif total + bytes > limit then
  allowed = 0
  if lockout > 0 then
    redis.call('SET', lockout_key, '1', 'PX', lockout)
    retry = lockout
  else  -- no lockout: come back when the oldest charge leaves the window
    local oldest = redis.call('ZRANGE', charges, 0, 0, 'WITHSCORES')
    retry = oldest[2] and (tonumber(oldest[2]) + window - now) or window
  end
elseif bytes > 0 then
  redis.call('ZADD', charges, now, member)
  total = total + bytes
end

if total > 0 then
  redis.call('SET', total_key, string.format('%d', total), 'PX', window)
  redis.call('PEXPIRE', charges, window)
else
  redis.call('DEL', total_key, charges)
end
return {allowed, retry, total}
"""


@dataclass(frozen=True)
class AccountLimits:
    byte_budget: int            # bytes per window; 0: no budget
    byte_budget_window_s: int
    byte_budget_lockout_s: int
    max_file_bytes: int

    @property
    def budget_on(self) -> bool:
        return self.byte_budget > 0


@dataclass(frozen=True)
class Charge:
    allowed: bool
    retry_after_s: int
    used: int       # bytes in the window, after this charge if it was allowed
    limit: int


class BudgetExceeded(ApiError):
    def __init__(self, limits: AccountLimits, retry_after_s: int) -> None:
        super().__init__(
            "byte_budget_exceeded",
            f"this account uploaded more than {limits.byte_budget} bytes in the last "
            f"{limits.byte_budget_window_s} seconds; try again in {retry_after_s} seconds",
            status=429, headers={"Retry-After": str(retry_after_s)},
        )


def limits_key(account: str) -> str:
    return f"attachd:limits:{account}"


def budget_keys(account: str) -> list[str]:
    base = f"attachd:budget:{{{account}}}"
    return [base, f"{base}:total", f"{base}:lockout"]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def merge_limits(settings: Settings, overrides: Mapping[Any, Any]) -> AccountLimits:
    """The account's limits: its overrides (a Redis hash, bytes or str) over the settings' defaults.

    A malformed override is ignored, not fatal: it must not turn every upload of the account into a 500.
    """
    values = {name: getattr(settings, name) for name in LIMIT_MINIMUMS}
    for raw_name, raw_value in overrides.items():
        name = _text(raw_name)
        if name not in LIMIT_MINIMUMS:
            continue
        try:
            value = int(_text(raw_value))
        except ValueError:
            value = -1
        if value < LIMIT_MINIMUMS[name]:
            log.warning("ignoring the account limit %s=%r", name, _text(raw_value))
            continue
        values[name] = value
    return AccountLimits(**values)


async def load_limits(redis, settings: Settings, account: str) -> AccountLimits:
    return merge_limits(settings, await redis.hgetall(limits_key(account)))


def multipart_charge(content_length: int | None, limits: AccountLimits) -> int:
    """A multipart upload is charged its declared Content-Length, before a byte of it is read."""
    if not limits.budget_on:
        return 0
    if content_length is None:
        raise ApiError("length_required", "a multipart upload needs a Content-Length while this account has "
                       "a byte budget", status=411)
    return content_length


def base64_charge(items: Iterable[dict[str, Any]]) -> int:
    """A JSON upload is charged the decoded size of its base64 sources; URLs and links cost nothing here."""
    return sum(encoding.decoded_size(item["source"]["data"]) for item in items
               if item["source"]["kind"] == "base64")


class ByteBudget:
    def __init__(self, redis) -> None:
        self._script = redis.register_script(_CHARGE)

    async def charge(self, account: str, charge_id: str, nbytes: int, limits: AccountLimits) -> Charge:
        """Add ``nbytes`` to the account's window, or refuse (and start the lockout) if it would not fit.

        ``charge_id`` must be unique per charge: charging the same id twice counts once.
        """
        allowed, retry_ms, used = await self._script(
            keys=budget_keys(account),
            args=[f"{charge_id}:{nbytes}", nbytes, limits.byte_budget, limits.byte_budget_window_s * 1000,
                  limits.byte_budget_lockout_s * 1000],
        )
        retry_s = max(1, -(-int(retry_ms) // 1000)) if not allowed else 0
        return Charge(bool(allowed), retry_s, int(used), limits.byte_budget)

    async def enforce(self, account: str, charge_id: str, nbytes: int, limits: AccountLimits) -> None:
        """Charge, or raise: 429 with Retry-After when the budget is spent, 413 when waiting cannot help."""
        if not limits.budget_on:
            return
        if nbytes > limits.byte_budget:  # never fits: refused outright, and no lockout for it
            raise ApiError("byte_budget_exceeded", f"this request carries {nbytes} bytes; this account may "
                           f"upload at most {limits.byte_budget} bytes per {limits.byte_budget_window_s} seconds",
                           status=413)
        result = await self.charge(account, charge_id, nbytes, limits)
        if not result.allowed:
            raise BudgetExceeded(limits, result.retry_after_s)
