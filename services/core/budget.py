"""The per-account byte budget: a sliding window of uploaded bytes, kept in Redis for every ingress replica.

An account may upload ``byte_budget`` bytes per ``byte_budget_window_s`` seconds; the upload that would
pass it is refused and locks the account's uploads out for ``byte_budget_lockout_s`` seconds (Autotask's
10,000,000 bytes per five minutes, then five minutes of refusals). One Lua script decides each charge, so
replicas never race. Its keys (the braces are a Redis Cluster hash tag: the three share a slot):

- ``attachd:budget:{<account>}``: sorted set of charges, member ``<charge id>:<bytes>``, score = time in ms;
- ``attachd:budget:{<account>}:total``: the bytes in the window, kept as a running total;
- ``attachd:budget:{<account>}:lockout``: present, with a TTL, while the account is locked out.

The window is off by default (``ATTACHD_BYTE_BUDGET`` 0): ``attachd limits --byte-budget`` turns it on for one
account. A compat profile whose API documents its own limits passes a ``Policy``: its window is charged to the
policy's subject within the account (Autotask: per integration code), by the policy's limits, in the same
admission. Per-account overrides of the limits live in the hash ``attachd:limits:<account>`` (``attachd limits``);
a policy's limits are its own (the hash ``attachd:limits:<account>:<subject>`` would override them; attachd
writes none).
The ingress admits an upload in one round trip (``ByteBudget.admit``, the ``_ADMIT`` script): it reads
those overrides, checks the declared size against them and charges the budget, and can claim the request's
Idempotency-Key first. The limits hash and the claim are not in the budget's hash slot, so that script
needs a single Redis (not a Cluster), as arq does.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from redis.asyncio import Redis

from services.core import encoding
from services.core.contract import Base64Source, IngestItem
from services.core.errors import ApiError
from services.core.settings import Settings

log = logging.getLogger("attachd.budget")

# The per-account limits, as named in Settings and in the override hash, with their smallest valid value.
LIMIT_MINIMUMS = {"byte_budget": 0, "byte_budget_window_s": 1, "byte_budget_lockout_s": 0, "max_file_bytes": 1}

# A Lua function of the admission script below: charge(charges, total_key, lockout_key, member, bytes, limit,
# window ms, lockout ms) returns {allowed (1|0), retry after ms, bytes in the window}.
_CHARGE_FUNCTION = """
local function charge(charges, total_key, lockout_key, member, bytes, limit, window, lockout)
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
end
"""

# An upload's admission in one round trip: claim the Idempotency-Key, read the account's limits, hold the
# declared size to them and charge the budget. The ingress calls it before it reads a byte of the body.
# KEYS: limits hash, charges, total, lockout[, claim].
# ARGV: charge id, bytes ('' = charge nothing, only read the limits; '-1' = length unknown),
#       file bytes (-1 = no file size to check), the four defaults in LIMIT_MINIMUMS' order[, claim TTL s].
# Steps, each one ending the script when it decides:
# 1. the claim (an Idempotency-Key): SET NX to 'pending:<charge id>' (the enqueue binds it to the job);
#    if it is held: {'earlier', its value},
#    nothing charged;
# 2. the limits: the defaults, overridden by each well-formed field of the hash (a decimal integer of at
#    most 15 digits, at least the limit's minimum; merge_limits applies the same rule); the others are
#    ignored and reported;
# 3. 'file_too_large' when file bytes > max_file_bytes; 'ok' when nothing is to be charged or the budget
#    is off (0); 'length_required' for an unknown length; 'never_fits' when bytes > the whole budget
#    (no lockout); else charge(): 'ok' or 'over_budget' (with retry after ms).
# A refusal (steps 3) drops the claim, so a refused request does not pin its Idempotency-Key.
# Returns {status, retry after ms, bytes in the window, the four limits..., ignored name, value, ...},
# or {'earlier', job id}.
_ADMIT = (
    _CHARGE_FUNCTION
    + """
local limits_key, charges, total_key, lockout_key, claim = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local charge_id, bytes, file_bytes = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])

if claim and not redis.call('SET', claim, 'pending:' .. charge_id, 'NX', 'EX', ARGV[8]) then
  return {'earlier', redis.call('GET', claim)}
end

local names, minimum = {NAMES}, {MINIMUMS}
local limits, ignored = {}, {}
for i, name in ipairs(names) do limits[name] = tonumber(ARGV[3 + i]) end
local overrides = redis.call('HGETALL', limits_key)
for i = 1, #overrides, 2 do
  local name, value = overrides[i], overrides[i + 1]
  if minimum[name] then
    if #value <= 15 and string.match(value, '^%d+$') and tonumber(value) >= minimum[name] then
      limits[name] = tonumber(value)
    else
      table.insert(ignored, name)
      table.insert(ignored, value)
    end
  end
end

local function answer(status, retry, used)
  if status ~= 'ok' and claim then redis.call('DEL', claim) end
  local reply = {status, retry, used}
  for _, name in ipairs(names) do table.insert(reply, limits[name]) end
  for _, v in ipairs(ignored) do table.insert(reply, v) end
  return reply
end

local budget = limits.byte_budget
if file_bytes > limits.max_file_bytes then return answer('file_too_large', 0, 0) end
if bytes == nil or budget == 0 then return answer('ok', 0, 0) end
if bytes < 0 then return answer('length_required', 0, 0) end
if bytes > budget then return answer('never_fits', 0, 0) end
local result = charge(charges, total_key, lockout_key, charge_id .. ':' .. ARGV[2], bytes, budget,
                      limits.byte_budget_window_s * 1000, limits.byte_budget_lockout_s * 1000)
return answer(result[1] == 1 and 'ok' or 'over_budget', result[2], result[3])
""".replace("{NAMES}", "{" + ", ".join(f"'{name}'" for name in LIMIT_MINIMUMS) + "}").replace(
        "{MINIMUMS}", "{" + ", ".join(f"{name} = {minimum}" for name, minimum in LIMIT_MINIMUMS.items()) + "}"
    )
)

# Admissions refused, by kind: the byte budget spent (429), a request larger than the whole budget (413), a
# file over the file limit (413), a body of unknown length while a budget applies (411).
REFUSAL_KINDS = ("budget_exceeded", "never_fits", "file_too_large", "length_required")
REFUSALS = Counter("attachd_budget_refusals", "Uploads refused at admission, by kind", ["kind"])
for _kind in REFUSAL_KINDS:
    REFUSALS.labels(_kind)

# An override is a plain decimal integer: what the script above accepts, and what `attachd limits` writes.
_WELL_FORMED = re.compile(r"[0-9]{1,15}")


@dataclass(frozen=True)
class AccountLimits:
    byte_budget: int  # bytes per window; 0: no budget
    byte_budget_window_s: int
    byte_budget_lockout_s: int
    max_file_bytes: int

    @property
    def budget_on(self) -> bool:
        return self.byte_budget > 0


@dataclass(frozen=True)
class Policy:
    """A compat profile's own upload limits, in place of the account's: a byte window charged to ``subject``
    (within the account, e.g. ``"integration:<code>"``) and a per-file limit. The Autotask profile passes
    ``Policy(subject="integration:<code>", byte_budget=10_000_000, window_s=300, lockout_s=300,
    max_file_bytes=7_000_000)`` as ``CreateOptions(budget=...)``."""

    subject: str  # what the window is charged to, e.g. "integration:ABC123"
    byte_budget: int  # bytes per window; 0: no window
    window_s: int
    lockout_s: int  # how long the subject's uploads stay refused once it went over; 0: none
    max_file_bytes: int

    def __post_init__(self) -> None:
        if not self.subject or any(ord(c) < 32 for c in self.subject):
            raise ValueError("a budget policy needs a subject without control characters")
        if self.byte_budget < 0 or self.window_s < 1 or self.lockout_s < 0 or self.max_file_bytes < 1:
            raise ValueError(f"the limits of the budget policy for {self.subject} are out of range")

    def limits(self) -> AccountLimits:
        return AccountLimits(self.byte_budget, self.window_s, self.lockout_s, self.max_file_bytes)


@dataclass(frozen=True)
class Admission:
    """What the admission script decided for a request it let through."""

    limits: AccountLimits
    earlier: str | None = None  # the Idempotency-Key is already bound to this job: nothing was charged


class BudgetExceeded(ApiError):
    def __init__(self, limits: AccountLimits, retry_after_s: int, who: str = "this account") -> None:
        super().__init__(
            "byte_budget_exceeded",
            f"{who} uploaded more than {limits.byte_budget} bytes in the last "
            f"{limits.byte_budget_window_s} seconds; try again in {retry_after_s} seconds",
            status=429,
            headers={"Retry-After": str(retry_after_s)},
        )


class NeverFits(ApiError):
    def __init__(self, limits: AccountLimits, nbytes: int, who: str = "this account") -> None:
        super().__init__(
            "byte_budget_exceeded",
            f"this request carries {nbytes} bytes; {who} may "
            f"upload at most {limits.byte_budget} bytes per {limits.byte_budget_window_s} seconds",
            status=413,
        )


class FileTooLarge(ApiError):
    """The declared size of the file is over the account's max_file_bytes (the caller names the file)."""

    def __init__(self, limits: AccountLimits) -> None:
        super().__init__(
            "size_exceeded",
            f"the file is larger than the limit of {limits.max_file_bytes} bytes",
            field="file",
            status=413,
        )
        self.limits = limits


def length_required(what: str, who: str = "this account") -> ApiError:
    return ApiError("length_required", f"{what} needs a Content-Length while {who} has a byte budget", status=411)


def limits_key(account: str) -> str:
    return f"attachd:limits:{account}"


def budget_keys(account: str) -> list[str]:
    base = f"attachd:budget:{{{account}}}"
    return [base, f"{base}:total", f"{base}:lockout"]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ignored(name: str, value: str) -> None:
    log.warning("ignoring the account limit %s=%r", name, value)


def merge_limits(settings: Settings, overrides: Mapping[Any, Any]) -> AccountLimits:
    """The account's limits: its overrides (a Redis hash, bytes or str) over the settings' defaults.

    A malformed override (not a decimal integer of at most 15 digits, or under the limit's minimum) is
    ignored, not fatal: it must not turn every upload of the account into a 500. The admission script
    applies the same rule in Redis.
    """
    values = {name: getattr(settings, name) for name in LIMIT_MINIMUMS}
    for raw_name, raw_value in overrides.items():
        name, text = _text(raw_name), _text(raw_value)
        if name not in LIMIT_MINIMUMS:
            continue
        if not _WELL_FORMED.fullmatch(text) or int(text) < LIMIT_MINIMUMS[name]:
            _ignored(name, text)
            continue
        values[name] = int(text)
    return AccountLimits(**values)


def base64_charge(items: Iterable[IngestItem]) -> int:
    """A JSON upload is charged the decoded size of its inline base64; URLs and links cost nothing here."""
    return sum(
        encoding.decoded_size(item.source.data)
        for item in items
        if isinstance(item.source, Base64Source) and item.source.data is not None
    )


class ByteBudget:
    def __init__(self, redis: Redis) -> None:
        self._admit = redis.register_script(_ADMIT)

    async def admit(
        self,
        settings: Settings,
        account: str,
        charge_id: str,
        nbytes: int | None,
        *,
        file_bytes: int | None = None,
        claim: tuple[str, int] | None = None,
        what: str = "an upload",
        policy: Policy | None = None,
    ) -> Admission:
        """One round trip: the account's limits, and ``nbytes`` charged to its budget (None: length unknown);
        with a ``policy``, the policy's limits and its subject's window instead.

        Raises FileTooLarge (``file_bytes`` over max_file_bytes), 411 (length unknown while a budget
        applies), NeverFits (413, more than the whole budget, no lockout) or BudgetExceeded (429). With
        ``claim`` = (key, TTL s), the key is first SET NX to ``pending:<charge_id>``; if it is held, its value
        is returned as ``earlier`` and nothing is charged. A refusal drops the claim.
        """
        arg = "-1" if nbytes is None else str(nbytes)
        return await self._run(settings, account, charge_id, arg, file_bytes, claim, what, policy)

    async def limits(
        self,
        settings: Settings,
        account: str,
        charge_id: str,
        *,
        claim: tuple[str, int] | None = None,
        policy: Policy | None = None,
    ) -> Admission:
        """The account's (or the policy's) limits, and the claim as in ``admit``, charging nothing."""
        return await self._run(settings, account, charge_id, "", None, claim, "", policy)

    async def _run(
        self,
        settings: Settings,
        account: str,
        charge_id: str,
        nbytes: str,
        file_bytes: int | None,
        claim: tuple[str, int] | None,
        what: str,
        policy: Policy | None,
    ) -> Admission:
        # A policy's window is its subject's within the account: another tenant's integration of the same
        # code is charged apart.
        charged = account if policy is None else f"{account}:{policy.subject}"
        defaults = merge_limits(settings, {}) if policy is None else policy.limits()
        who = "this account" if policy is None else policy.subject
        keys = [limits_key(charged), *budget_keys(charged)]
        args = [
            charge_id,
            nbytes,
            -1 if file_bytes is None else file_bytes,
            *(getattr(defaults, name) for name in LIMIT_MINIMUMS),
        ]
        if claim is not None:
            keys.append(claim[0])
            args.append(claim[1])
        reply = await self._admit(keys=keys, args=args)
        status = _text(reply[0])
        if status == "earlier":  # a retry: the caller answers with the earlier job, limits unread
            return Admission(defaults, earlier=_text(reply[1]))
        limits = _reply_limits(reply)
        if status == "ok":
            return Admission(limits)
        refusal: ApiError
        if status == "file_too_large":
            kind, refusal = "file_too_large", FileTooLarge(limits)
        elif status == "length_required":
            kind, refusal = "length_required", length_required(what, who)
        elif status == "never_fits":
            kind, refusal = "never_fits", NeverFits(limits, int(nbytes), who)
        elif status == "over_budget":
            kind, refusal = "budget_exceeded", BudgetExceeded(limits, _retry_s(reply[1]), who)
        else:
            raise RuntimeError(f"the admission script answered {status!r}")
        REFUSALS.labels(kind).inc()
        raise refusal


def _reply_limits(reply: list[Any]) -> AccountLimits:
    """The limits the admission script applied (logging the overrides it ignored)."""
    n = len(LIMIT_MINIMUMS)
    ignored = reply[3 + n :]
    for name, value in zip(ignored[::2], ignored[1::2], strict=True):
        _ignored(_text(name), _text(value))
    return AccountLimits(*(int(v) for v in reply[3 : 3 + n]))


def _retry_s(retry_ms: Any) -> int:
    return max(1, -(-int(retry_ms) // 1000))
