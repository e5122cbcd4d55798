"""The upload console (/console), driven in a real browser: Playwright for Python with Debian's chromium
against a running attachd (ingress, query and a worker), the server's state checked through the API and the
database after each step, and through the gateway in front of the separate parts. Plus its routes, its
Content-Security-Policy and the freshness of its bundle.

Playwright's own browser download cannot work here: the test uses the system's chromium (CI's set-up,
.ci/run, installs it). Set ATTACHD_TEST_SCREENSHOTS=docs to write the README's screenshots again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from yarl import URL

from services.cli import _dev_defaults
from services.console import app as console_app
from services.console.policy import content_security_policy, origin_of
from services.core import apikeys
from services.core.auth import READ, WRITE, mint_token
from services.core.repository import apikeys as key_store
from services.core.settings import load_settings
from services.ingress.app import create_app as ingress_app
from tests.conftest import JWT_SECRET, jpeg_bytes

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
CHUNK = 5 * MiB  # the console's tus chunk size (console/src/uploader.js)
TUS = {"Tus-Resumable": "1.0.0"}
STRICT_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; object-src 'none'; base-uri 'none';"
    " form-action 'none'; frame-ancestors 'none'"
)


# -- the pure parts -------------------------------------------------------------------------------------------


def test_policy_allows_only_the_console_origin_and_the_public_url():
    assert content_security_policy("") == STRICT_CSP
    with_public = content_security_policy("https://files.example.com/base/")
    assert "img-src 'self' blob: data: https://files.example.com;" in with_public
    assert "connect-src 'self' https://files.example.com;" in with_public
    assert with_public.startswith("default-src 'self';")
    assert "unsafe" not in with_public


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://files.example.com/x", "https://files.example.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("", None),
        ("files.example.com", None),
        ("javascript:alert(1)", None),
    ],
)
def test_origin_of(url, origin):
    assert origin_of(url) == origin


def test_attachd_dev_turns_the_console_on_unless_told_otherwise():
    assert _dev_defaults({}) == {"console": True}
    assert _dev_defaults({"ATTACHD_CONSOLE": "false"}) == {}
    assert load_settings({}).console is False
    assert load_settings({"ATTACHD_CONSOLE": "on"}).console is True


def test_the_ingress_serves_the_console_only_when_asked():
    def paths(**overrides: Any) -> set[str]:
        app = ingress_app(load_settings({}, jwt_secret="x", **overrides))
        return {r.resource.canonical for r in app.router.routes() if r.resource is not None}

    assert "/console" not in paths()
    assert {"/console", "/console/static/{name}"} <= paths(console=True)


def _source_digest() -> str:
    """As console/build.mjs computes it: each source, the lockfile and the build script, by name and content."""
    src = ROOT / "console" / "src"
    hash_ = hashlib.sha256()
    for name in [f"src/{p.name}" for p in sorted(src.iterdir())] + ["package-lock.json", "build.mjs"]:
        hash_.update(f"{name}\n".encode())
        hash_.update((ROOT / "console" / name).read_bytes())
    return hash_.hexdigest()


def test_the_shipped_bundle_is_built_from_the_sources_in_console():
    """Editing console/src (or the lockfile) without `make console` leaves the package serving the old bundle."""
    static = Path(console_app.__file__).parent / "static"
    assert (static / "BUILD").read_text().strip() == _source_digest(), "run `make console` and commit the bundle"
    page = (static / "index.html").read_text()
    for name in console_app.ASSETS:
        assert (static / name).stat().st_size > 0
    assert 'src="/console/static/console.js"' in page and 'href="/console/static/console.css"' in page
    # Nothing from a CDN: every script and stylesheet the page names is one of its own.
    assert "http://" not in page and "https://" not in page


# -- the routes -----------------------------------------------------------------------------------------------


async def test_console_is_off_unless_enabled(service):
    response = await service.client.get("/console")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_console_page_and_bundle_with_a_strict_policy(make_service):
    async with make_service(console=True) as svc:
        page = await svc.client.get("/console")
        assert page.status == 200
        assert page.headers["Content-Type"] == "text/html; charset=utf-8"
        assert page.headers["Content-Security-Policy"] == STRICT_CSP
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        assert "<title>attachd console</title>" in await page.text()
        script = await svc.client.get("/console/static/console.js")
        assert script.status == 200 and script.headers["Content-Type"] == "text/javascript; charset=utf-8"
        static = Path(console_app.__file__).parent / "static"
        assert await script.read() == (static / "console.js").read_bytes()
        style = await svc.client.get("/console/static/console.css")
        assert style.status == 200 and style.headers["Content-Type"] == "text/css; charset=utf-8"
        for path in ("/console/static/BUILD", "/console/static/index.html", "/console/static/..%2Fapp.py"):
            assert (await svc.client.get(path)).status == 404, path
        slash = await svc.client.get("/console/", allow_redirects=False)
        assert slash.status == 308 and slash.headers["Location"] == "/console"


# -- in the browser -------------------------------------------------------------------------------------------


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: CI's set-up (.ci/run) installs it with apt-get install -y chromium")
        pytest.skip("no chromium here (apt-get install -y chromium); CI installs it and runs this test")
    return path


@contextlib.asynccontextmanager
async def _browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    executable = _chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable)
        try:
            yield browser
        finally:
            await browser.close()


def _survey_log(lines: int) -> bytes:
    """The large file: the same text the page makes with SURVEY_LOG_JS (made there, not sent through the driver)."""
    return "".join(f"{i:08d} site survey reading\n" for i in range(lines)).encode()


SURVEY_LOG_JS = (
    "(n) => Array.from({length: n}, (_, i) => String(i).padStart(8, '0') + ' site survey reading\\n').join('')"
)

# Drops files on the Dashboard as the browser does when files are dragged onto it: dragenter, dragover and
# drop events whose DataTransfer holds them. Each file is {name, type, base64} or {name, type, text}.
DROP_JS = """async ([files, makeLog]) => {
  const transfer = new DataTransfer()
  const make = eval(makeLog)
  for (const f of files) {
    const body = f.base64 != null ? Uint8Array.from(atob(f.base64), (c) => c.charCodeAt(0)) : make(f.lines)
    transfer.items.add(new File([body], f.name, { type: f.type }))
  }
  const zone = document.querySelector('.uppy-Dashboard-inner')
  for (const kind of ['dragenter', 'dragover', 'drop']) {
    zone.dispatchEvent(new DragEvent(kind, { bubbles: true, cancelable: true, dataTransfer: transfer }))
  }
}"""


async def _drop(page: Any, files: list[dict[str, Any]]) -> None:
    await page.evaluate(DROP_JS, [files, SURVEY_LOG_JS])


def _photo(name: str, width: int, height: int) -> tuple[dict[str, Any], bytes]:
    body = jpeg_bytes(width, height)
    return {"name": name, "type": "image/jpeg", "base64": base64.b64encode(body).decode()}, body


async def _api_message(svc: Any, method: str, path: str, **kwargs: Any) -> str:
    """The error message the API itself gives for a request, to compare with what the console shows."""
    response = await svc.client.request(method, path, **kwargs)
    assert response.status >= 400, await response.text()
    return str((await response.json())["error"]["message"])


async def _api_key(svc: Any) -> str:
    """A key of the service's account, stored as `attachd keys create` stores one."""
    key = apikeys.new_key()
    await key_store.insert_key(
        svc.pool,
        key_hash=apikeys.key_hash(key),
        shown=apikeys.shown_part(key),
        account_id=svc.account,
        name="console",
        actor_type="Application",
        actor_id="console",
        scopes=[READ, WRITE],
        profile=None,
        bindings={},
        expires_at=None,
    )
    return key


async def _live(svc: Any, target_id: str) -> list[dict[str, Any]]:
    response = await svc.client.get(
        "/v1/attachments", params={"target_type": "Task", "target_id": target_id}, headers=svc.auth()
    )
    assert response.status == 200
    return list((await response.json())["attachments"])


async def test_console_in_chromium_uploads_resumes_renames_and_deletes(make_service, tmp_path):
    from playwright.async_api import expect

    shots = Path(os.environ["ATTACHD_TEST_SCREENSHOTS"]) if os.environ.get("ATTACHD_TEST_SCREENSHOTS") else tmp_path
    target_id = f"site-{uuid.uuid4().hex[:6]}"
    async with make_service(console=True) as svc, _browser() as browser:
        base = str(svc.client.make_url("/console"))
        context = await browser.new_context(viewport={"width": 1180, "height": 760}, device_scale_factor=1)
        page = await context.new_page()
        blocked: list[str] = []  # anything the Content-Security-Policy refused, and uncaught errors
        page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
        page.on("pageerror", lambda e: blocked.append(str(e)))

        # Sign in: a bad credential is refused in the API's words; a good one opens the workspace.
        response = await page.goto(base)
        assert response is not None and response.headers["content-security-policy"] == STRICT_CSP
        refused = await _api_message(svc, "GET", "/v1/attachments/count", headers={"Authorization": "Bearer nope"})
        await expect(page.locator("#signin")).to_be_visible()
        await expect(page.locator("#signout")).to_be_hidden()
        await page.fill("#credential", "nope")
        await page.click("#signin-form button[type=submit]")
        await expect(page.locator("#errors li")).to_contain_text(refused)
        await expect(page.locator("#workspace")).to_be_hidden()
        await page.screenshot(path=shots / "console-signin.png")
        key = await _api_key(svc)  # an API key, pasted as a user would: every upload below is made with it
        await page.fill("#credential", key)
        await page.click("#signin-form button[type=submit]")
        await expect(page.locator("#workspace")).to_be_visible()
        await expect(page.locator("#who-name")).to_have_text(f"API key {key[:12]}…")
        await page.fill("#target-type", "Task")
        await page.fill("#target-id", target_id)
        await page.click("#target-form button[type=submit]")
        await expect(page.locator("#grid-empty")).to_be_visible()

        # Three photos and a text file, dropped at once: they appear in the grid, newest first, with thumbnails.
        photos = [_photo(f"photo-{n}.jpg", 900 + 100 * n, 600) for n in (1, 2, 3)]
        notes = b"Gate code 4411. Ladder in the van.\n"
        text = {"name": "notes.txt", "type": "text/plain", "base64": base64.b64encode(notes).decode()}
        await _drop(page, [p for p, _ in photos] + [text])
        await expect(page.locator("#grid .card")).to_have_count(4, timeout=30_000)
        rows = await svc.rows()
        assert sorted(r["name"] for r in rows) == ["notes.txt", "photo-1.jpg", "photo-2.jpg", "photo-3.jpg"]
        assert {(r["target_type"], r["target_id"]) for r in rows} == {("Task", target_id)}
        assert {(r["created_by_type"], r["created_by_id"]) for r in rows} == {("Application", "console")}
        by_name = {r["name"]: r for r in rows}
        for (meta, body), width in zip(photos, (1000, 1100, 1200), strict=True):
            row = by_name[meta["name"]]
            assert (row["sha256"].hex(), row["width"], row["content_type"]) == (
                hashlib.sha256(body).hexdigest(),
                width,
                "image/jpeg",
            )
        assert by_name["notes.txt"]["sha256"].hex() == hashlib.sha256(notes).hexdigest()
        # The grid shows the API's list, newest first, each photo's thumbnail loaded from its signed link.
        live = await _live(svc, target_id)
        assert await page.locator("#grid .card .name").all_inner_texts() == [
            r["name"] for r in sorted(live, key=lambda r: r["created_at"], reverse=True)
        ]
        thumbs = page.locator("#grid .card img.thumb")
        await expect(thumbs).to_have_count(3)
        for index in range(3):
            await expect(thumbs.nth(index)).to_have_js_property("naturalWidth", 72)
        await expect(page.locator("#grid .card", has_text="notes.txt")).to_contain_text("text/plain")

        # A file the worker refuses once its bytes are in (a .jpg name over text): the API's own message, and
        # the file leaves the uploader, so that nothing sends it again with the next files.
        fake = b"not a photo at all\n"
        form = FormData({"target_type": "Task", "target_id": target_id})
        form.add_field("file", fake, filename="scan.jpg", content_type="image/jpeg")
        refused_upload = await _api_message(svc, "POST", "/v1/attachments", data=form, headers=svc.auth())
        await _drop(page, [{"name": "scan.jpg", "type": "image/jpeg", "base64": base64.b64encode(fake).decode()}])
        await expect(page.locator("#errors li", has_text="scan.jpg")).to_contain_text(refused_upload)
        assert len(await svc.rows()) == 4
        await expect(page.locator(".uppy-Dashboard-Item")).to_have_count(4)
        await page.locator("#errors li", has_text="scan.jpg").locator("button.dismiss").click()
        await expect(page.locator("#errors li")).to_have_count(0)

        # A large file, cut off by going offline as its third chunk starts, resumed when the page is back online.
        lines = (14 * MiB) // len(b"00000000 site survey reading\n")
        survey = _survey_log(lines)
        assert 2 * CHUNK < len(survey) < 3 * CHUNK
        patches: list[str] = []
        cut = asyncio.Event()

        async def cut_third_chunk(route: Any) -> None:
            if route.request.method == "PATCH":
                patches.append(route.request.url)
                if len(patches) == 3:
                    await context.set_offline(True)
                    await route.abort("internetdisconnected")
                    cut.set()
                    return
            await route.continue_()

        await page.route("**/v1/uploads/tus/*", cut_third_chunk)
        await _drop(page, [{"name": "site-survey.log", "type": "text/plain", "lines": lines}])
        await asyncio.wait_for(cut.wait(), 20)
        upload_path = URL(patches[2]).path
        # The server kept the two chunks it received and knows nothing more; nothing is committed.
        head = await svc.client.head(upload_path, headers={**svc.auth(), **TUS})
        assert head.status == 200
        assert (int(head.headers["Upload-Offset"]), int(head.headers["Upload-Length"])) == (2 * CHUNK, len(survey))
        assert len(await svc.rows()) == 4
        await page.screenshot(path=shots / "console-offline.png")
        await context.set_offline(False)
        await expect(page.locator("#grid .card")).to_have_count(5, timeout=30_000)
        assert len(patches) == 4 and len(set(patches)) == 1  # the rest, in one more chunk, to the same upload
        resumed = {r["name"]: r for r in await svc.rows()}["site-survey.log"]
        assert (resumed["size"], resumed["sha256"].hex()) == (len(survey), hashlib.sha256(survey).hexdigest())
        assert str(resumed["id"]) == upload_path.rsplit("/", 1)[1]
        await page.unroute("**/v1/uploads/tus/*")

        # Rename a photo from the grid.
        card = page.locator("#grid .card", has_text="photo-2.jpg")
        await card.locator("button.rename").click()
        await card.locator("input.rename-input").fill("Front door")
        await card.locator("input.rename-input").press("Enter")
        await expect(page.locator("#grid .card .name", has_text="Front door")).to_have_count(1)
        renamed = {r["sha256"].hex(): r for r in await svc.rows()}[hashlib.sha256(photos[1][1]).hexdigest()]
        assert renamed["name"] == "Front door"

        # Delete another (after the browser's confirm): gone from the grid, soft-deleted on the server.
        page.once("dialog", lambda dialog: dialog.accept())
        await page.locator("#grid .card", has_text="photo-3.jpg").locator("button.delete").click()
        await expect(page.locator("#grid .card")).to_have_count(4)
        deleted = {r["name"]: r for r in await svc.rows()}["photo-3.jpg"]
        assert deleted["canceled_at"] is not None
        assert sorted(r["name"] for r in await _live(svc, target_id)) == [
            "Front door",
            "notes.txt",
            "photo-1.jpg",
            "site-survey.log",
        ]

        # Download: the card's link is the record's signed original, and it serves the file's bytes.
        link = await page.locator("#grid .card", has_text="notes.txt").locator("a.download").get_attribute("href")
        downloaded = await svc.client.get(URL(str(link)).raw_path_qs)
        assert downloaded.status == 200 and await downloaded.read() == notes
        assert blocked == []
        await expect(page.get_by_text("Connected to the Internet").filter(visible=True)).to_have_count(
            0, timeout=10_000
        )
        await page.screenshot(path=shots / "console.png", full_page=True)

        # A target the API refuses: the tus creation's 400, before any byte, shown in the API's words.
        form = FormData({"target_type": "9Task", "target_id": "1"})
        form.add_field("file", notes, filename="later.txt", content_type="text/plain")
        refused_target = await _api_message(svc, "POST", "/v1/attachments", data=form, headers=svc.auth())
        await page.fill("#target-type", "9Task")
        await page.fill("#target-id", "1")
        await page.click("#target-form button[type=submit]")
        await _drop(page, [{"name": "later.txt", "type": "text/plain", "base64": base64.b64encode(notes).decode()}])
        await expect(page.locator("#errors li", has_text="later.txt")).to_contain_text(refused_target)
        await expect(page.locator(".uppy-Dashboard-Item.is-error")).to_have_count(1)
        assert len(await svc.rows()) == 5
        await context.close()


async def test_console_through_the_gateway_in_front_of_the_separate_parts(
    pg_url, redis_url, s3_endpoint, tmp_path: Path, db
):
    """The production shape: the ingress (serving the console), the query service and a worker as separate
    processes on S3, one origin in front of them routing as deploy/k8s's HTTPRoute does. The page, its uploads
    (tus, in chunks, S3 parts), its list and its thumbnails all pass through that gateway."""
    from playwright.async_api import expect

    from tests.test_gateway_stack import separate_parts

    account = f"gw-{uuid.uuid4().hex[:8]}"
    token = mint_token(JWT_SECRET, account=account, sub="7", scope=f"{READ} {WRITE}")
    photo = jpeg_bytes(800, 600)
    lines = (11 * MiB) // len(b"00000000 site survey reading\n")  # three chunks through the gateway
    stack = separate_parts(
        ("ingress", "query", "worker"),
        pg_url=pg_url,
        redis_url=redis_url,
        s3_endpoint=s3_endpoint,
        tmp_path=tmp_path,
        env={"ATTACHD_CONSOLE": "false"},
        part_env={"ingress": {"ATTACHD_CONSOLE": "true"}},
    )
    async with stack as base, _browser() as browser:
        page = await browser.new_page()
        blocked: list[str] = []
        page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
        page.on("pageerror", lambda e: blocked.append(str(e)))
        await page.goto(f"{base}/console")
        await page.fill("#credential", token)
        await page.click("#signin-form button[type=submit]")
        await expect(page.locator("#who-name")).to_have_text(f"account {account} as 7")
        await page.fill("#target-id", "gw")
        await page.click("#target-form button[type=submit]")
        photo_file = {"name": "door.jpg", "type": "image/jpeg", "base64": base64.b64encode(photo).decode()}
        await _drop(page, [photo_file, {"name": "survey.log", "type": "text/plain", "lines": lines}])
        await expect(page.locator("#grid .card")).to_have_count(2, timeout=45_000)
        await expect(page.locator("#grid .card img.thumb")).to_have_js_property("naturalWidth", 72)
        assert blocked == []
    rows = await db.fetch("SELECT name, sha256, target_id FROM attachments WHERE account_id = $1", account)
    assert {(r["name"], r["sha256"].hex(), r["target_id"]) for r in rows} == {
        ("door.jpg", hashlib.sha256(photo).hexdigest(), "gw"),
        ("survey.log", hashlib.sha256(_survey_log(lines)).hexdigest(), "gw"),
    }
