"""The per-account byte budget: the pure rules, the admission script on real Redis, and the API that enforces it."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import math
import time
import uuid

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from services.cli import combined_app
from services.cli import main as attachd
from services.core import budget
from services.core.auth import WRITE
from services.core.budget import AccountLimits, ByteBudget, Policy
from services.core.contract import Base64Source, IngestItem, LinkSource, Source, UrlSource
from services.core.errors import ApiError
from services.core.jobs import QUEUE
from services.core.settings import Settings, load_settings
from services.ingress import writes
from services.ingress.app import create_app as ingress_app
from services.ingress.handlers import CreateOptions, accept_create
from services.web.engines import REDIS
from services.web.http import principal

AUTOTASK = Policy(
    subject="integration:ABC123", byte_budget=10_000_000, window_s=300, lockout_s=300, max_file_bytes=7_000_000
)


def rule(byte_budget: int = 100, window_s: int = 60, lockout_s: int = 0) -> Settings:
    return Settings(
        byte_budget=byte_budget, byte_budget_window_s=window_s, byte_budget_lockout_s=lockout_s, max_file_bytes=1000
    )


async def used(redis, account: str) -> int:
    """The bytes in the account's window, as the script keeps them."""
    return int(await redis.get(budget.budget_keys(account)[1]) or 0)


async def over_budget(gate: ByteBudget, settings: Settings, account: str, charge_id: str, nbytes: int) -> int:
    """Admit a charge that must be refused with a 429; its Retry-After."""
    with pytest.raises(budget.BudgetExceeded) as caught:
        await gate.admit(settings, account, charge_id, nbytes)
    return int(caught.value.headers["Retry-After"])


def text_item(size: int, name: str = "notes.txt") -> dict:
    return {"target_type": "Task", "target_id": "1", "filename": name, "data": base64.b64encode(b"x" * size).decode()}


def form(body: bytes, name: str = "notes.txt") -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("target_type", "Task")
    data.add_field("target_id", "1")
    data.add_field("file", body, filename=name, content_type="text/plain")
    return data


def printed_limits(out: str) -> dict[str, tuple[int, str]]:
    """`attachd limits` prints the account, then one `name value (account|default)` line per limit."""
    return {name: (int(value), origin.strip("()")) for name, value, origin in map(str.split, out.splitlines()[1:])}


async def refused(resp, status: int = 429) -> dict:
    assert resp.status == status, await resp.text()
    return (await resp.json())["error"]


@pytest.fixture
async def redis(redis_url):
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def account() -> str:
    return f"acct-{uuid.uuid4().hex[:12]}"


# --- the pure rules ---------------------------------------------------------------------------------


def test_account_overrides_win_over_the_settings():
    settings = Settings(
        byte_budget=10_000_000, byte_budget_window_s=300, byte_budget_lockout_s=300, max_file_bytes=5_000
    )
    assert budget.merge_limits(settings, {}) == AccountLimits(10_000_000, 300, 300, 5_000)
    overrides = {b"byte_budget": b"0", b"max_file_bytes": b"9000", "byte_budget_window_s": "60"}
    merged = budget.merge_limits(settings, overrides)
    assert merged == AccountLimits(0, 60, 300, 9_000) and not merged.budget_on


def test_malformed_or_unknown_overrides_are_ignored():
    settings = Settings()
    overrides = {b"byte_budget": b"lots", b"max_file_bytes": b"0", b"byte_budget_window_s": b"-5", b"colour": b"red"}
    assert budget.merge_limits(settings, overrides) == budget.merge_limits(settings, {})


def test_settings_read_the_budget_from_the_environment():
    settings = load_settings(
        {"ATTACHD_BYTE_BUDGET": "5000", "ATTACHD_BYTE_BUDGET_WINDOW_S": "60", "ATTACHD_BYTE_BUDGET_LOCKOUT_S": "30"}
    )
    assert (settings.byte_budget, settings.byte_budget_window_s, settings.byte_budget_lockout_s) == (5000, 60, 30)


def test_the_default_limits_agree_the_window_is_opt_in():
    """A window smaller than the file limit would make files between the two impossible to upload and the
    per-file error unreachable: by default there is no window, only the 25 MiB file limit."""
    limits = budget.merge_limits(Settings(), {})
    assert limits == AccountLimits(0, 300, 300, 25 * 1024 * 1024) and not limits.budget_on


def test_a_policy_holds_its_own_limits():
    policy = AUTOTASK
    assert policy.limits() == AccountLimits(10_000_000, 300, 300, 7_000_000)
    for bad in (
        {"subject": ""},
        {"subject": "a\nb"},
        {"byte_budget": -1},
        {"window_s": 0},
        {"lockout_s": -1},
        {"max_file_bytes": 0},
    ):
        with pytest.raises(ValueError):
            dataclasses.replace(policy, **bad)


def test_base64_is_charged_its_decoded_size_and_urls_nothing():
    sources: list[Source] = [Base64Source(data=base64.b64encode(b"x" * n).decode()) for n in (1, 2, 3, 1000)]
    sources += [UrlSource(), LinkSource()]
    items = [IngestItem(id=uuid.uuid4(), source=source) for source in sources]
    assert budget.base64_charge(items) == 1006


# --- the script on real Redis -------------------------------------------------------------------------


async def test_a_declared_length_is_charged_as_it_is_and_an_unknown_one_needs_no_budget(redis, account):
    """Multipart and raw bodies are charged their Content-Length before a byte is read; without one they are
    a 411 while the account has a budget, and charged nothing when it has none."""
    gate = ByteBudget(redis)
    assert (await gate.admit(rule(byte_budget=10_000), account, "m", 1234)).limits.byte_budget == 10_000
    assert await used(redis, account) == 1234
    with pytest.raises(ApiError) as caught:
        await gate.admit(rule(byte_budget=10_000), account, "n", None)
    assert (caught.value.status, caught.value.code) == (411, "length_required")
    assert (await gate.admit(rule(byte_budget=0), account, "o", None)).limits.byte_budget == 0
    assert await used(redis, account) == 1234


async def test_exactly_the_budget_is_allowed_and_one_byte_more_is_not(redis, account):
    gate = ByteBudget(redis)
    sent = time.monotonic()
    await gate.admit(rule(), account, "a", 60)
    assert (await gate.admit(rule(), account, "b", 40)).limits.byte_budget == 100
    assert await used(redis, account) == 100
    retry = await over_budget(gate, rule(), account, "c", 1)
    # no lockout: until the oldest charge leaves the window (a minute after it, less the time since)
    assert 60 - math.ceil(time.monotonic() - sent) <= retry <= 60
    assert await used(redis, account) == 100


async def test_charges_slide_out_of_the_window(redis, account):
    window_s = 5  # t1 comes half-way through t0's window: each check below is 2.5 s from the edge it tests
    gate, window = ByteBudget(redis), rule(window_s=window_s)
    await gate.admit(window, account, "t0", 50)
    t0_charged = time.monotonic()
    await asyncio.sleep(window_s / 2)
    await gate.admit(window, account, "t1", 50)
    assert await used(redis, account) == 100
    await over_budget(gate, window, account, "full", 1)
    await asyncio.sleep(t0_charged + window_s + 0.2 - time.monotonic())  # t0 has left the window, t1 has not
    await gate.admit(window, account, "t2", 50)
    assert await used(redis, account) == 100
    await over_budget(gate, window, account, "over", 1)
    charges, total, _ = budget.budget_keys(account)
    members = await redis.zrange(charges, 0, -1)
    assert sorted(m.decode() for m in members) == ["t1:50", "t2:50"]
    assert int(await redis.get(total)) == 100
    assert 0 < await redis.pttl(charges) <= window_s * 1000  # idle accounts leave nothing behind


async def test_the_lockout_outlasts_the_window_and_then_clears(redis, account):
    lockout_s = 4  # 2.8 s of it left to see when the 1 s window is empty, on a busy machine too
    gate, lockout = ByteBudget(redis), rule(window_s=1, lockout_s=lockout_s)
    await gate.admit(lockout, account, "a", 100)
    b_sent = time.monotonic()
    assert await over_budget(gate, lockout, account, "b", 1) == lockout_s
    b_answered = time.monotonic()
    await asyncio.sleep(1.2)  # the window is empty now, but the lockout holds: Retry-After is what is left of it
    c_sent = time.monotonic()
    retry = await over_budget(gate, lockout, account, "c", 0)
    least, most = lockout_s - (time.monotonic() - b_sent), lockout_s - (c_sent - b_answered)
    assert math.ceil(least) <= retry <= math.ceil(most)
    assert await used(redis, account) == 0
    await asyncio.sleep(b_answered + lockout_s + 0.2 - time.monotonic())
    await gate.admit(lockout, account, "d", 100)
    assert await used(redis, account) == 100


async def test_a_charge_counts_once_and_a_lost_total_is_recounted(redis, account):
    gate = ByteBudget(redis)
    await gate.admit(rule(), account, "a", 30)
    await gate.admit(rule(), account, "a", 30)
    assert await used(redis, account) == 30
    await redis.delete(budget.budget_keys(account)[1])
    await gate.admit(rule(), account, "b", 20)
    assert await used(redis, account) == 50


# --- through the API ---------------------------------------------------------------------------------


async def test_uploads_pass_until_the_window_is_full_then_429(make_service):
    async with make_service(byte_budget=10_000, byte_budget_window_s=60, byte_budget_lockout_s=60) as svc:
        for name in ("a.txt", "b.txt"):
            resp = await svc.upload_json(text_item(4_000, name))
            assert resp.status == 201, await resp.text()
        kept = await svc.stored_keys()

        resp = await svc.upload_json(text_item(4_000, "c.txt"))
        error = await refused(resp)
        assert resp.headers["Retry-After"] == "60"
        assert error == {
            "code": "byte_budget_exceeded",
            "message": "this account uploaded more than 10000 bytes in the last 60 seconds; try again in 60 seconds",
        }
        assert [r["filename"] for r in await svc.rows()] == ["a.txt", "b.txt"]
        assert await svc.stored_keys() == kept
        # No job was queued for it (crons may be, by their own ids).
        assert all(job.startswith(b"cron:") for job in await svc.client.app[REDIS].zrange(QUEUE, 0, -1))

        # locked out: even a tiny upload, a multipart one, or a URL to fetch
        await refused(await svc.upload_json(text_item(1)))
        await refused(await svc.client.post("/v1/attachments", headers=svc.auth(), data=form(b"hi")))
        await refused(await svc.upload_json({"target_type": "Task", "target_id": "1", "url": "http://x.test/a"}))
        assert len(await svc.rows()) == 2 and await svc.stored_keys() == kept

        # another account has its own budget
        resp = await svc.client.post("/v1/attachments", json=text_item(4_000), headers=svc.auth(svc.other_account()))
        assert resp.status == 201, await resp.text()


async def test_multipart_is_charged_before_it_is_read(make_service):
    async with make_service(byte_budget=10_000, byte_budget_window_s=60, byte_budget_lockout_s=60) as svc:
        resp = await svc.client.post("/v1/attachments", headers=svc.auth(), data=form(b"x" * 6_000))
        assert resp.status == 201, await resp.text()
        resp = await svc.client.post("/v1/attachments", headers=svc.auth(), data=form(b"y" * 3_900))
        await refused(resp)  # 6,000 + 3,900 bytes of file fit, but not with their multipart framing
        assert len(await svc.rows()) == 1

        async def chunked():
            yield (b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhello\r\n--b--\r\n')

        resp = await svc.client.post(
            "/v1/attachments",
            data=chunked(),
            headers={**svc.auth(svc.other_account()), "Content-Type": "multipart/form-data; boundary=b"},
        )
        assert (await refused(resp, 411))["code"] == "length_required"


async def test_a_request_larger_than_the_whole_budget_is_413_without_lockout(make_service):
    async with make_service(byte_budget=5_000, byte_budget_window_s=60, byte_budget_lockout_s=60) as svc:
        resp = await svc.upload_json(text_item(6_000))
        error = await refused(resp, 413)
        assert error["code"] == "byte_budget_exceeded" and "Retry-After" not in resp.headers
        assert await svc.stored_keys() == []
        assert (await svc.upload_json(text_item(4_000))).status == 201


async def test_account_limits_raise_and_lower_the_budget_and_the_file_cap(make_service, monkeypatch, capsys):
    async with make_service(
        byte_budget=10_000, byte_budget_window_s=60, byte_budget_lockout_s=60, max_file_bytes=5_000
    ) as svc:
        # `attachd limits` reads the same settings as the service
        for name, value in (
            ("REDIS_URL", svc.settings.redis_url),
            ("BYTE_BUDGET", "10000"),
            ("BYTE_BUDGET_WINDOW_S", "60"),
            ("BYTE_BUDGET_LOCKOUT_S", "60"),
            ("MAX_FILE_BYTES", "5000"),
        ):
            monkeypatch.setenv(f"ATTACHD_{name}", value)
        big, small = svc.account, svc.other_account()
        attachd(["limits", "--account", big, "--byte-budget", "30000", "--max-file-bytes", "8000"])
        assert printed_limits(capsys.readouterr().out) == {
            "byte_budget": (30_000, "account"),
            "byte_budget_window_s": (60, "default"),
            "byte_budget_lockout_s": (60, "default"),
            "max_file_bytes": (8_000, "account"),
        }
        attachd(["limits", "--account", small, "--byte-budget", "5000", "--max-file-bytes", "2000"])
        capsys.readouterr()

        # raised: three times 6,000 bytes, each over the default cap of 5,000
        resp = await svc.client.post("/v1/attachments", headers=svc.auth(big), data=form(b"x" * 6_000))
        assert resp.status == 201, await resp.text()
        for _ in range(2):
            resp = await svc.upload_json(text_item(6_000))
            assert resp.status == 201, await resp.text()
        assert [r["size"] for r in await svc.rows()] == [6_000] * 3

        # lowered: a 3,000-byte file is over this account's cap, in either form ...
        resp = await svc.client.post("/v1/attachments", headers=svc.auth(small), data=form(b"x" * 3_000))
        assert (await refused(resp, 413))["field"] == "file"
        resp = await svc.client.post("/v1/attachments", json=text_item(3_000), headers=svc.auth(small))
        assert (await refused(resp, 413))["field"] == "data"
        # ... and the multipart one was still charged its Content-Length: 2,000 more do not fit in 5,000
        await refused(await svc.client.post("/v1/attachments", json=text_item(2_000), headers=svc.auth(small)))
        assert await svc.rows(small) == []

        attachd(["limits", "--account", small, "--clear"])
        shown = printed_limits(capsys.readouterr().out)
        assert shown["byte_budget"] == (10_000, "default") and shown["max_file_bytes"] == (5_000, "default")


async def test_a_budget_of_zero_turns_it_off(make_service):
    async with make_service(byte_budget=0) as svc:
        for name in ("a.txt", "b.txt", "c.txt"):
            assert (await svc.upload_json(text_item(4_000, name))).status == 201
        assert await svc.client.app[REDIS].keys("attachd:budget:*") == []


async def test_every_ingress_replica_spends_the_same_budget(make_service):
    async with make_service(byte_budget=10_000, byte_budget_window_s=60, byte_budget_lockout_s=60) as svc:
        other = TestClient(TestServer(ingress_app(svc.settings)))
        await other.start_server()
        try:
            assert (await svc.upload_json(text_item(6_000))).status == 201
            resp = await other.post("/v1/attachments", json=text_item(6_000), headers=svc.auth())
            assert resp.headers["Retry-After"] == "60"
            await refused(resp)
            await refused(await svc.upload_json(text_item(1)))
        finally:
            await other.close()


# --- admission: the limits, the budget and the Idempotency-Key in one script --------------------------

ODD_VALUES = [
    "42",
    "0005",
    "0",
    "1",
    "lots",
    "-5",
    " 7",
    "+7",
    "7 ",
    "1_000",
    "4.5",
    "1e3",
    "",
    "٣",
    "9" * 15,
    "9" * 16,
]


async def test_the_script_reads_overrides_exactly_as_merge_limits_does(redis, account, caplog):
    settings = Settings(byte_budget=1_000, byte_budget_window_s=30, byte_budget_lockout_s=10, max_file_bytes=500)
    gate = ByteBudget(redis)
    key = budget.limits_key(account)
    for name in budget.LIMIT_MINIMUMS:
        for value in ODD_VALUES:
            await redis.delete(key)
            await redis.hset(key, mapping={name: value, "colour": "red"})
            expected = budget.merge_limits(settings, await redis.hgetall(key))
            caplog.clear()
            admitted = await gate.limits(settings, account, "probe")
            assert admitted.limits == expected, (name, value)
            # well-formed: ASCII digits, at most 15 of them, and at least the limit's minimum
            minimum = budget.LIMIT_MINIMUMS[name]
            ok = value.isascii() and value.isdigit() and len(value) <= 15 and int(value) >= minimum
            assert getattr(expected, name) == (int(value) if ok else getattr(settings, name)), (name, value)
            assert ("ignoring the account limit" in caplog.text) == (not ok), (name, value)
    await redis.hset(key, mapping={"byte_budget": "5", "byte_budget_window_s": "7", "max_file_bytes": "9"})
    assert (await gate.limits(settings, account, "probe")).limits == AccountLimits(5, 7, 10, 9)
    assert await redis.keys(f"attachd:budget:{{{account}}}*") == []  # reading the limits charges nothing


async def test_admission_charges_and_refuses_with_the_accounts_own_limits(redis, account):
    settings = Settings(byte_budget=1_000, byte_budget_window_s=60, byte_budget_lockout_s=30, max_file_bytes=500)
    gate = ByteBudget(redis)
    await redis.hset(budget.limits_key(account), mapping={"byte_budget": "100", "max_file_bytes": "80"})
    admitted = await gate.admit(settings, account, "a", 60)
    assert admitted == budget.Admission(AccountLimits(100, 60, 30, 80))
    with pytest.raises(budget.FileTooLarge) as caught:  # the file limit is checked before any charge
        await gate.admit(settings, account, "b", 81, file_bytes=81)
    assert (caught.value.status, caught.value.limits.max_file_bytes) == (413, 80)
    with pytest.raises(ApiError) as caught:
        await gate.admit(settings, account, "c", None)
    assert (caught.value.status, caught.value.code) == (411, "length_required")
    with pytest.raises(budget.NeverFits):  # more than the whole budget: 413 and no lockout
        await gate.admit(settings, account, "d", 101)
    _, total, lockout = budget.budget_keys(account)
    assert int(await redis.get(total)) == 60 and not await redis.exists(lockout)
    sent = time.monotonic()
    with pytest.raises(budget.BudgetExceeded) as caught:  # does not fit now: 429 and the lockout
        await gate.admit(settings, account, "e", 41)
    assert caught.value.status == 429 and caught.value.headers == {"Retry-After": "30"}
    left_ms = await redis.pttl(lockout)
    assert 30_000 - 1000 * (time.monotonic() - sent) - 1 <= left_ms <= 30_000
    with pytest.raises(budget.BudgetExceeded):  # locked out: even nothing
        await gate.admit(settings, account, "f", 0)

    await redis.hset(budget.limits_key(account), "byte_budget", "0")  # this account: no budget at all
    assert (await gate.admit(settings, account, "g", None)).limits.byte_budget == 0
    assert int(await redis.get(total)) == 60


async def test_admission_claims_the_idempotency_key_first(redis, account):
    settings = Settings(byte_budget=100, byte_budget_window_s=60, byte_budget_lockout_s=0)
    gate, claim = ByteBudget(redis), (f"attachd:idem:test:{account}", 60)
    assert (await gate.admit(settings, account, "first", 10, claim=claim)).earlier is None
    # pending until the job is queued (jobs.submit names it then)
    assert await redis.get(claim[0]) == b"pending:first" and 0 < await redis.ttl(claim[0]) <= 60
    again = await gate.admit(settings, account, "second", 10, claim=claim)
    assert again.earlier == "pending:first"
    assert int(await redis.get(budget.budget_keys(account)[1])) == 10  # a retry is not charged
    await redis.delete(claim[0])
    with pytest.raises(budget.NeverFits):
        await gate.admit(settings, account, "third", 1_000, claim=claim)
    assert not await redis.exists(claim[0])  # a refused request does not pin its key


async def test_a_multipart_retry_with_its_idempotency_key_is_not_charged_twice(make_service):
    async with make_service(byte_budget=10_000, byte_budget_window_s=60, byte_budget_lockout_s=60) as svc:
        headers = {**svc.auth(), "Idempotency-Key": "m-1"}
        too_big = await svc.client.post("/v1/attachments", headers=headers, data=form(b"x" * 11_000))
        assert (await refused(too_big, 413))["code"] == "byte_budget_exceeded"
        first = await svc.client.post("/v1/attachments", headers=headers, data=form(b"x" * 6_000))
        assert first.status == 201, await first.text()  # the refusal left the key free
        second = await svc.client.post("/v1/attachments", headers=headers, data=form(b"x" * 6_000))
        assert second.status == 201 and (await second.json())["id"] == (await first.json())["id"]
        assert len(await svc.rows()) == 1
        # 6,000 bytes and their framing charged once: another 3,000 still fit
        resp = await svc.client.post("/v1/attachments", headers=svc.auth(), data=form(b"y" * 3_000))
        assert resp.status == 201, await resp.text()


# --- a profile's own policy ---------------------------------------------------------------------------


async def test_a_policy_is_charged_to_its_subject_by_its_own_limits(redis, account):
    settings = Settings(byte_budget=0, max_file_bytes=50)  # the account: no window, a small file limit
    policy = Policy(subject="integration:X", byte_budget=100, window_s=60, lockout_s=30, max_file_bytes=80)
    gate = ByteBudget(redis)
    assert (await gate.admit(settings, account, "a", 70, policy=policy)).limits == policy.limits()
    charged = f"{account}:integration:X"
    assert await used(redis, charged) == 70 and await used(redis, account) == 0
    with pytest.raises(budget.FileTooLarge) as too_large:  # the policy's file limit, not the account's
        await gate.admit(settings, account, "b", 81, file_bytes=81, policy=policy)
    assert too_large.value.limits.max_file_bytes == 80
    with pytest.raises(budget.BudgetExceeded) as caught:
        await gate.admit(settings, account, "c", 31, policy=policy)
    assert caught.value.message.startswith("integration:X uploaded more than 100 bytes in the last 60 seconds")
    assert caught.value.headers == {"Retry-After": "30"}
    # the same subject in another account, and the account itself, are charged apart
    assert (await gate.admit(settings, f"{account}-2", "d", 70, policy=policy)).limits.byte_budget == 100
    assert (await gate.admit(settings, account, "e", 1000)).limits.byte_budget == 0
    assert (await gate.limits(settings, account, "f", policy=policy)).limits == policy.limits()


async def _profile_create(request):
    """A compat profile's create, as the Autotask profile makes it: its policy in the CreateOptions."""
    who = await principal(request, WRITE)
    policy = dataclasses.replace(AUTOTASK, byte_budget=8_000, max_file_bytes=3_000, lockout_s=60)
    return await writes.respond(request, await accept_create(request, who, CreateOptions(budget=policy)))


@pytest.fixture
async def profiled(make_service):
    """The service, and a client of an app that also has a profile's create route."""
    async with make_service() as svc:
        app = combined_app(svc.settings)
        app.router.add_post("/profile/attachments", _profile_create)
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            yield svc, client
        finally:
            await client.close()


async def test_a_profiles_policy_refuses_a_file_over_its_limit_then_spends_its_window(profiled):
    svc, client = profiled
    resp = await client.post("/profile/attachments", headers=svc.auth(), data=form(b"x" * 3_500))
    error = await refused(resp, 413)  # the per-file error: the window (8,000) is larger than the file limit
    assert (error["code"], error["field"]) == ("size_exceeded", "file")
    resp = await client.post("/profile/attachments", headers=svc.auth(), json=text_item(3_500))
    assert (await refused(resp, 413))["field"] == "data"
    assert await svc.rows() == []
    resp = await client.post("/profile/attachments", headers=svc.auth(), json=text_item(2_900))
    assert resp.status == 201, await resp.text()
    # 3,500 (multipart, charged as it arrived) + 2,900 are in the window: 2,000 more do not fit
    error = await refused(await client.post("/profile/attachments", headers=svc.auth(), json=text_item(2_000)))
    assert error["message"].startswith("integration:ABC123 uploaded more than 8000 bytes")
    # the account's own uploads have no window (the default) and the native file limit
    for _ in range(3):
        resp = await svc.upload_json(text_item(4_000))
        assert resp.status == 201, await resp.text()


async def test_by_default_a_file_over_the_file_limit_gets_the_per_file_error(make_service):
    """No window by default: a file just over 25 MiB is refused for its size, one just under it is kept."""
    async with make_service() as svc:
        limit = svc.settings.max_file_bytes
        assert (limit, svc.settings.byte_budget) == (25 * 1024 * 1024, 0)
        resp = await svc.client.post("/v1/attachments", headers=svc.auth(), data=form(b"x" * (limit + 1)))
        error = await refused(resp, 413)
        assert (error["code"], error["field"]) == ("size_exceeded", "file")
        resp = await svc.client.post("/v1/attachments", headers=svc.auth(), data=form(b"x" * (limit - 1)))
        assert resp.status == 201, await resp.text()
        assert [r["size"] for r in await svc.rows()] == [limit - 1]
