"""API keys: made with `attachd keys create`, used as bearer tokens on native /v1 beside JWTs, listed,
revoked (refused at once by every replica), expired, limited to a compat profile; only their hash stored."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import os
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.core import apikeys
from services.core.apikeys import StoredKey
from services.core.auth import READ, WRITE, mint_token
from services.core.errors import ApiError
from services.embedded import free_port
from services.ingress.app import create_app as ingress_app
from services.query.app import create_app as query_app
from services.web import credentials
from services.web.engines import pool_ctx
from services.web.http import authenticate, base_app, json_response
from tests.conftest import JWT_SECRET, CommandFailed

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
TEXT = {"target_type": "Ticket", "target_id": "7", "filename": "notes.txt", "data": base64.b64encode(b"hi").decode()}
LISTED_KEYS = {
    "id",
    "name",
    "prefix",
    "account",
    "actor_type",
    "actor_id",
    "scopes",
    "profile",
    "bindings",
    "created_at",
    "expires_at",
    "revoked_at",
}


# -- the pure rules --------------------------------------------------------------------------------------


def test_a_key_is_prefixed_random_and_never_taken_for_a_jwt():
    keys = {apikeys.new_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert key.startswith("atk_") and len(key) == 47 and key[4:].isalnum()
        assert apikeys.is_key(key) and apikeys.well_formed(key)
    jwt = mint_token(JWT_SECRET, account="a")
    assert not apikeys.is_key(jwt)
    assert not apikeys.well_formed("atk_short") and not apikeys.well_formed("atk_" + "-" * 43)


def test_only_the_sha256_of_a_key_identifies_it():
    key = apikeys.new_key()
    assert apikeys.key_hash(key) == hashlib.sha256(key.encode()).digest()
    assert len(apikeys.key_hash(key)) == 32
    assert apikeys.shown_part(key) == key[:12]


def test_scopes_take_the_seed_aliases_and_writing_implies_reading():
    assert apikeys.parse_scopes(f"{READ} {WRITE}") == [READ, WRITE]
    assert apikeys.parse_scopes(WRITE) == [READ, WRITE]
    assert apikeys.parse_scopes("task_management_read") == [READ]
    for bad in ("", "   ", "attachments:delete", f"{READ} admin"):
        with pytest.raises(ValueError):
            apikeys.parse_scopes(bad)


def test_bindings_are_name_value_pairs():
    assert apikeys.parse_bindings("org=1,workspace=2") == {"org": "1", "workspace": "2"}
    assert apikeys.parse_bindings(" org = 1 ") == {"org": "1"}
    for bad, says in (
        ("org=1,org=2", "twice"),
        ("org", "name=value"),
        ("org=", "name=value"),
        ("=1", "empty name"),
        ("Org=1", "lowercase"),
        ("org=1,", "name=value"),
    ):
        with pytest.raises(ValueError, match=says):
            apikeys.parse_bindings(bad)


def test_an_expiry_is_a_duration_or_a_date_time_with_its_offset_in_the_future():
    assert apikeys.parse_expiry("90d", NOW) == NOW + dt.timedelta(days=90)
    assert apikeys.parse_expiry("12h", NOW) == NOW + dt.timedelta(hours=12)
    assert apikeys.parse_expiry("30m", NOW) == NOW + dt.timedelta(minutes=30)
    assert apikeys.parse_expiry("2w", NOW) == NOW + dt.timedelta(weeks=2)
    assert apikeys.parse_expiry("2027-01-01T00:00:00Z", NOW) == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    assert apikeys.parse_expiry("2027-01-01T02:00:00+02:00", NOW) == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    for bad, says in (
        ("2027-01-01T00:00:00", "offset"),
        ("2020-01-01T00:00:00Z", "not in the future"),
        ("0d", "not in the future"),
        ("90 days", "duration"),
        ("-5d", "duration"),
    ):
        with pytest.raises(ValueError, match=says):
            apikeys.parse_expiry(bad, NOW)


def test_names_profiles_and_actor_types_are_checked():
    assert apikeys.parse_profile("toggl") == "toggl"
    assert apikeys.parse_actor_type("Application") == "Application"
    assert apikeys.parse_name("  CI uploads ") == "CI uploads"
    for parse, bad in (
        (apikeys.parse_profile, "Toggl"),
        (apikeys.parse_profile, ""),
        (apikeys.parse_actor_type, "Robot"),
        (apikeys.parse_name, " "),
        (apikeys.parse_name, "a\nb"),
        (apikeys.parse_name, "x" * 201),
    ):
        with pytest.raises(ValueError):
            parse(bad)


def stored(**changes) -> StoredKey:
    base = StoredKey(
        id=1, account_id="acct", actor_type="Application", actor_id="ci", scopes=frozenset({READ}), profile=None
    )
    return StoredKey(**{**base.__dict__, **changes})


def refusal(key: StoredKey, profile: str | None = None) -> ApiError:
    with pytest.raises(ApiError) as caught:
        apikeys.principal_of(key, now=NOW, profile=profile)
    assert caught.value.status == 401 and caught.value.code == "unauthorized"
    return caught.value


def test_a_stored_key_gives_its_principal_until_revoked_or_expired():
    who = apikeys.principal_of(stored(expires_at=NOW + dt.timedelta(seconds=1)), now=NOW, profile=None)
    assert (who.account_id, who.actor_type, who.actor_id, who.scopes) == ("acct", "Application", "ci", {READ})
    assert (who.profile, dict(who.bindings)) == (None, {})
    assert "revoked" in refusal(stored(revoked_at=NOW - dt.timedelta(days=1))).message
    assert "expired" in refusal(stored(expires_at=NOW)).message
    # an unlimited key works natively and in every profile
    assert apikeys.principal_of(stored(), now=NOW, profile="espocrm").profile is None


def test_a_key_limited_to_a_profile_works_there_only_and_carries_its_bindings():
    toggl = stored(profile="toggl", bindings={"org": "1", "workspace": "2"})
    who = apikeys.principal_of(toggl, now=NOW, profile="toggl")
    assert who.profile == "toggl" and dict(who.bindings) == {"org": "1", "workspace": "2"}
    assert "toggl" in refusal(toggl, profile=None).message
    assert "toggl" in refusal(toggl, profile="espocrm").message


# -- the command and the routes --------------------------------------------------------------------------


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def create_key(attachd_keys, account: str, *options: str) -> str:
    lines = await attachd_keys("create", "--account", account, *options)
    key = lines[-1]
    assert apikeys.well_formed(key), lines
    return key


async def listed(attachd_keys, account: str) -> list[dict]:
    return orjson.loads("\n".join(await attachd_keys("list", "--account", account, "--json")))


async def refused(resp, status: int = 401, code: str = "unauthorized") -> str:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert body["error"]["code"] == code
    return body["error"]["message"]


async def test_a_key_made_by_the_cli_reads_and_writes_natively(service, attachd_keys):
    svc = service
    key = await create_key(
        attachd_keys,
        svc.account,
        "--scope",
        f"{READ} {WRITE}",
        "--actor-type",
        "Application",
        "--actor-id",
        "ci",
        "--name",
        "CI",
    )
    created = await svc.client.post("/v1/attachments", json=TEXT, headers=bearer(key))
    assert created.status == 201, await created.text()
    record = await created.json()
    assert record["created_by"] == {"type": "Application", "id": "ci"}
    [row] = await svc.rows()
    assert (row["created_by_type"], row["created_by_id"], row["account_id"]) == ("Application", "ci", svc.account)

    listing = await svc.client.get("/v1/attachments?target_type=Ticket&target_id=7", headers=bearer(key))
    assert [a["id"] for a in (await listing.json())["attachments"]] == [record["id"]]
    one = await svc.client.get(f"/v1/attachments/{record['id']}", headers=bearer(key))
    assert (await one.json())["filename"] == "notes.txt"
    file = await svc.client.get(f"/v1/attachments/{record['id']}/file", headers=bearer(key))
    assert file.status == 200 and await file.read() == b"hi"
    changed = await svc.client.patch(f"/v1/attachments/{record['id']}", json={"name": "Notes"}, headers=bearer(key))
    assert changed.status == 200, await changed.text()
    # and JWTs still work beside keys
    assert (await svc.client.get(f"/v1/attachments/{record['id']}", headers=svc.auth())).status == 200


async def test_the_list_shows_every_key_of_the_account_but_never_a_key(service, attachd_keys):
    svc = service
    plain = await create_key(attachd_keys, svc.account, "--name", "reader", "--scope", READ)
    toggl = await create_key(
        attachd_keys, svc.account, "--profile", "toggl", "--bind", "org=1,workspace=2", "--expires", "90d"
    )
    await create_key(attachd_keys, svc.other_account())

    keys = await listed(attachd_keys, svc.account)
    assert [set(k) for k in keys] == [LISTED_KEYS, LISTED_KEYS]
    first, second = keys
    assert first["id"] < second["id"]
    assert (first["name"], first["prefix"], first["scopes"], first["profile"], first["bindings"]) == (
        "reader",
        plain[:12],
        [READ],
        None,
        {},
    )
    assert (first["actor_type"], first["actor_id"], first["expires_at"], first["revoked_at"]) == (
        "Application",
        "reader",
        None,
        None,
    )
    assert (second["name"], second["actor_id"], second["profile"], second["bindings"]) == (
        None,
        toggl[:12],
        "toggl",
        {"org": "1", "workspace": "2"},
    )
    assert second["scopes"] == [READ, WRITE]
    created = dt.datetime.fromisoformat(second["created_at"])
    expires = dt.datetime.fromisoformat(second["expires_at"])
    assert abs(expires - created - dt.timedelta(days=90)) < dt.timedelta(minutes=1)

    table = await attachd_keys("list", "--account", svc.account)
    header = ["ID", "NAME", "PREFIX", "SCOPES", "PROFILE", "BINDINGS", "CREATED", "EXPIRES", "REVOKED"]
    assert table[0].split() == header
    assert len(table) == 3 and "org=1,workspace=2" in table[2]
    shown = "\n".join(table) + orjson.dumps(keys).decode()
    assert plain not in shown and toggl not in shown and plain[12:20] not in shown


async def test_the_stored_row_holds_the_hash_and_never_the_key(service, attachd_keys):
    svc = service
    key = await create_key(attachd_keys, svc.account, "--name", "stored")
    [row] = await svc.pool.fetch("SELECT * FROM api_keys WHERE account_id = $1", svc.account)
    assert bytes(row["key_hash"]) == hashlib.sha256(key.encode()).digest()
    secret_part = key[12:]
    for column, value in row.items():
        assert secret_part not in str(value) and secret_part.encode() not in repr(value).encode(), column


async def test_a_revoked_key_is_refused_at_once_by_every_replica(service, attachd_keys):
    svc = service
    key = await create_key(attachd_keys, svc.account)
    replicas = [TestClient(TestServer(ingress_app(svc.settings))), TestClient(TestServer(query_app(svc.settings)))]
    for replica in replicas:
        await replica.start_server()
    writes, reads = replicas
    try:
        # every replica has used the key (any cache would hold it now)
        assert (await writes.post("/v1/attachments", json=TEXT, headers=bearer(key))).status == 201
        assert (await reads.get("/v1/attachments/count", headers=bearer(key))).status == 200
        assert (await svc.client.get("/v1/attachments/count", headers=bearer(key))).status == 200

        [shown] = await listed(attachd_keys, svc.account)
        [line] = await attachd_keys("revoke", str(shown["id"]))
        assert line.startswith(f"key {shown['id']} of account {svc.account} is revoked since ")

        for message in await asyncio.gather(
            refused(await writes.post("/v1/attachments", json=TEXT, headers=bearer(key))),
            refused(await reads.get("/v1/attachments/count", headers=bearer(key))),
            refused(await svc.client.get("/v1/attachments/count", headers=bearer(key))),
        ):
            assert message == "the API key has been revoked"
    finally:
        for replica in replicas:
            await replica.close()
    [after] = await listed(attachd_keys, svc.account)
    assert after["revoked_at"] is not None
    assert await attachd_keys("revoke", str(shown["id"])) == [line]  # revoking again keeps the first time
    assert len(await svc.rows()) == 1


async def test_an_expired_key_is_refused(service, attachd_keys):
    svc = service
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=4)  # time to create it and use it, on a busy machine
    key = await create_key(attachd_keys, svc.account, "--expires", soon.isoformat())
    assert (await svc.client.get("/v1/attachments/count", headers=bearer(key))).status == 200
    await asyncio.sleep((soon - dt.datetime.now(dt.UTC)).total_seconds() + 0.2)
    assert await refused(await svc.client.get("/v1/attachments/count", headers=bearer(key))) == (
        "the API key has expired"
    )
    assert await refused(await svc.upload_json(TEXT, headers=bearer(key))) == "the API key has expired"
    assert await svc.rows() == []


async def test_a_key_without_the_write_scope_reads_but_cannot_write(service, attachd_keys):
    svc = service
    key = await create_key(attachd_keys, svc.account, "--scope", "task_management_read")
    assert (await svc.client.get("/v1/attachments/count", headers=bearer(key))).status == 200
    resp = await svc.client.post("/v1/attachments", json=TEXT, headers=bearer(key))
    await refused(resp, 403, "insufficient_scope")
    assert resp.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope", scope="attachments:write"'
    assert await svc.rows() == []


async def test_unknown_and_malformed_keys_are_refused(service):
    svc = service
    assert await refused(await svc.client.get("/v1/attachments/count", headers=bearer(apikeys.new_key()))) == (
        "the API key is not known"
    )
    assert await refused(await svc.client.get("/v1/attachments/count", headers=bearer("atk_nope"))) == (
        "the API key is malformed"
    )
    assert await refused(await svc.upload_json(TEXT, headers=bearer("atk_" + "x" * 43 + "'--"))) == (
        "the API key is malformed"
    )
    assert await refused(await svc.client.get("/v1/attachments/count")) == (
        "an Authorization: Bearer token (a JWT or an API key) is required"
    )
    basic = {"Authorization": "Basic " + base64.b64encode(b"user:" + apikeys.new_key().encode()).decode()}
    assert await refused(await svc.client.get("/v1/attachments/count", headers=basic)) == (
        "the Authorization header must be 'Bearer <token>'"
    )
    assert await svc.rows() == []


@pytest.fixture
async def profile_probe(service) -> TestClient:
    """An app whose routes authenticate as a compat profile would: ``/probe/<profile>`` (``none``: as native),
    the key in ``X-Api-Key``; it answers the principal."""

    async def probe(request: web.Request) -> web.Response:
        profile = request.match_info["profile"]
        credential = credentials.header(request.headers, "X-Api-Key")
        who = await authenticate(request, credential, READ, profile=None if profile == "none" else profile)
        return json_response({"account": who.account_id, "profile": who.profile, "bindings": dict(who.bindings)})

    app = base_app("probe", service.settings)
    app.cleanup_ctx.append(pool_ctx)
    app.router.add_get("/probe/{profile}", probe)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client
    await client.close()


async def test_a_key_limited_to_a_profile_is_refused_natively_and_by_other_profiles(
    service, attachd_keys, profile_probe
):
    svc = service
    key = await create_key(attachd_keys, svc.account, "--profile", "toggl", "--bind", "org=1,workspace=2")
    message = await refused(await svc.client.get("/v1/attachments/count", headers=bearer(key)))
    assert message == "this API key is limited to the toggl compatibility profile"
    assert await refused(await svc.upload_json(TEXT, headers=bearer(key))) == message
    assert await refused(await profile_probe.get("/probe/espocrm", headers={"X-Api-Key": key})) == message
    assert await refused(await profile_probe.get("/probe/none", headers={"X-Api-Key": key})) == message
    resp = await profile_probe.get("/probe/toggl", headers={"X-Api-Key": key})
    assert resp.status == 200
    assert await resp.json() == {"account": svc.account, "profile": "toggl", "bindings": {"org": "1", "workspace": "2"}}

    unlimited = await create_key(attachd_keys, svc.account)
    resp = await profile_probe.get("/probe/espocrm", headers={"X-Api-Key": unlimited})
    assert await resp.json() == {"account": svc.account, "profile": None, "bindings": {}}
    assert await refused(await profile_probe.get("/probe/toggl")) == "credentials are required"


async def test_the_ingress_takes_jwt_uploads_while_postgres_is_away_and_answers_keys_503(service, attachd_keys):
    svc = service
    key = await create_key(attachd_keys, svc.account)
    away = svc.settings.__class__(
        **{**svc.settings.__dict__, "database_url": f"postgresql://127.0.0.1:{free_port()}/x"}
    )
    ingress = TestClient(TestServer(ingress_app(away)))
    await ingress.start_server()
    try:
        resp = await ingress.post("/v1/attachments", json=TEXT, headers=svc.auth())
        assert resp.status == 201, await resp.text()
        resp = await ingress.post("/v1/attachments", json=TEXT, headers=bearer(key))
        await refused(resp, 503, "unavailable")
        assert resp.headers["Retry-After"] == "2"
    finally:
        await ingress.close()
    assert len(await svc.rows()) == 1


# -- the command's own refusals and --data-dir -------------------------------------------------------------


async def test_the_command_refuses_bad_options_before_touching_the_database(attachd_keys):
    for argv, says in (
        (["create", "--account", "a", "--bind", "org=1"], "--bind needs --profile"),
        (["create", "--account", "a", "--scope", "admin"], "unknown scope admin"),
        (["create", "--account", "a/b"], "an account id is"),
        (["create", "--account", "a", "--expires", "2001-01-01T00:00:00Z"], "not in the future"),
        (["create", "--account", "a", "--actor-type", "Bot"], "actor type must be one of"),
        (["revoke", "x"], "invalid int value"),
    ):
        with pytest.raises(CommandFailed, match=says):
            await attachd_keys(*argv)


async def test_revoking_an_unknown_key_says_so(attachd_keys, db):
    missing = (await db.fetchval("SELECT coalesce(max(id), 0) FROM api_keys")) + 1000
    with pytest.raises(CommandFailed, match=f"no key {missing}"):
        await attachd_keys("revoke", str(missing))


async def test_data_dir_finds_the_postgres_of_a_running_attachd_dev(service, attachd_keys, monkeypatch, tmp_path):
    """`attachd dev --data-dir D` keeps Postgres in D/postgres: the command finds it there, as `attachd token`
    finds its secret (the test server stands in for it)."""
    if os.environ.get("ATTACHD_TEST_DATABASE_URL"):
        pytest.skip("the test database is not an embedded Postgres")
    svc = service
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "postgres").symlink_to(Path(await svc.pool.fetchval("SHOW data_directory")))
    monkeypatch.delenv("ATTACHD_DATABASE_URL")
    lines = await attachd_keys("create", "--account", svc.account, "--data-dir", str(tmp_path / "dev"))
    assert (await svc.client.get("/v1/attachments/count", headers=bearer(lines[-1]))).status == 200
    with pytest.raises(CommandFailed, match="has no running Postgres"):
        await attachd_keys("list", "--account", svc.account, "--data-dir", str(tmp_path / "nothing"))
