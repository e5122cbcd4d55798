"""Hostile requests, as an attacker would send them, on every route: each is a 4xx in the error shape that
echoes no secret, and leaves nothing behind (no row, no event, no object, nothing staged).

Four tables: requests through the HTTP client (:data:`CASES`), URL fetches that try to reach what they must
not (:data:`SSRF`), bytes on a raw socket that the HTTP parser refuses (:data:`RAW`), and the two-tenant
matrix (:data:`MATRIX`: account B's token against account A's ids). Then the connection deadlines and a
client that leaves mid-upload.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import hmac
import logging
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.core import signing
from services.core.auth import READ, WRITE
from services.web.http import REQUESTS
from tests.conftest import JWT_SECRET, jpeg_bytes

ID = "0196e853-0000-7000-8000-000000000000"
T = {"target_type": "Task", "target_id": "1"}
B64 = base64.b64encode(b"hello world\n").decode()
TEXT = {**T, "filename": "a.txt", "data": B64}
BOUNDARY = "hostileboundary"
MP = f"multipart/form-data; boundary={BOUNDARY}"
OTHER_SECRET = "another-secret-that-is-long-enough-for-hs256"
NOTHING = object()


# --- bytes an attacker crafts ----------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    """A few hundred bytes whose header promises 3.6 gigapixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 4096, 9))
        + _png_chunk(b"IEND", b"")
    )


def jpeg_bomb() -> bytes:
    """A real JPEG whose frame header is patched to claim 65500 x 65500 pixels."""
    data = bytearray(jpeg_bytes(64, 64))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65500, 65500)
    return bytes(data)


def gif_bomb() -> bytes:
    return (
        b"GIF89a"
        + struct.pack("<HH", 65535, 65535)
        + b"\x00\x00\x00"
        + b",\x00\x00\x00\x00\xff\xff\xff\xff\x00\x02\x02D\x01\x00;"
    )


HTML = b"<!DOCTYPE html><html><body><script>fetch('/steal?c='+document.cookie)</script></body></html>"
SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(2)</script></svg>'
XML = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><x>&xxe;</x>'
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\x00" * 200
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 200
PHP = b"<?php system($_GET['c']); ?>"
POLYGLOT = jpeg_bytes(32, 32)[:-2] + HTML  # a JPEG with HTML appended: fine as a .jpg, never as .html


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def part(name: str, value: bytes | str, *, filename: str | None = None, content_type: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    raw = value.encode() if isinstance(value, str) else value
    return head.encode() + b"\r\n" + raw + b"\r\n"


def raw_part(*headers: str, body: str) -> bytes:
    """A part with exactly these header lines."""
    return f"--{BOUNDARY}\r\n{''.join(h + chr(13) + chr(10) for h in headers)}\r\n{body}\r\n".encode()


def multipart(*parts: bytes, close: bool = True) -> bytes:
    return b"".join(parts) + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


def target_fields() -> bytes:
    return part("target_type", "Task") + part("target_id", "1")


def upload(filename: str, content: bytes, content_type: str = "application/octet-stream") -> bytes:
    return multipart(target_fields(), part("file", content, filename=filename, content_type=content_type))


def gz(data: bytes) -> bytes:
    return gzip.compress(data, 9)


def forged_token(claims: dict[str, Any], *, account: str = "victim", secret: str = JWT_SECRET) -> str:
    base = {"account": account, "sub": "mallory", "scope": f"{READ} {WRITE}", "exp": int(time.time()) + 600}
    return jwt.encode({**base, **claims}, secret, algorithm="HS256")


def bearer(
    claims: dict[str, Any], *, secret: str = JWT_SECRET, tamper: Callable[[str], str] | None = None
) -> Callable[[str], str]:
    """The Authorization value of a token for the test's account with these claims, signed with ``secret``."""

    def make(account: str) -> str:
        token = forged_token(claims, account=account, secret=secret)
        return "Bearer " + (tamper(token) if tamper else token)

    return make


RSA_PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PUBLIC = (
    RSA_PRIVATE.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hs256_with(key: str, account: str) -> str:
    """A token "signed" HS256 with a public key as the HMAC secret: the algorithm-confusion attack."""
    claims = {"account": account, "sub": "mallory", "scope": f"{READ} {WRITE}"}
    signing_input = f"{_b64url(orjson.dumps({'alg': 'HS256', 'typ': 'JWT'}))}.{_b64url(orjson.dumps(claims))}"
    return f"{signing_input}.{_b64url(hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest())}"


def unsigned_token(claims: dict[str, Any]) -> str:
    return f"{_b64url(orjson.dumps({'alg': 'none', 'typ': 'JWT'}))}.{_b64url(orjson.dumps(claims))}."


def nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"field": "name", "op": "eq", "value": "a"}
    for _ in range(depth):
        node = {"op": "and", "items": [node]}
    return node


def list_cursor(order: str, keys: list[Any], last_id: Any = ID) -> str:
    payload = orjson.dumps({"o": order, "k": keys, "id": last_id})
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


# --- the table of requests -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One hostile request. ``auth``: "write", "read", "none", a raw Authorization value, or the account's
    Authorization value made by a function. ``status``: the one expected (None: any 4xx)."""

    id: str
    method: str
    path: str
    json: Any = NOTHING
    body: bytes | None = None
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    auth: str | Callable[[str], str] = "write"
    status: int | None = None
    code: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def create(id: str, json: Any = NOTHING, **kw: Any) -> Case:
    return Case(id, "POST", "/v1/attachments", json=json, **kw)


def form(id: str, body: bytes, **kw: Any) -> Case:
    return Case(id, "POST", "/v1/attachments", body=body, content_type=kw.pop("content_type", MP), **kw)


def raw_upload(id: str, query: str, body: bytes, **kw: Any) -> Case:
    return Case(
        id, "POST", f"/v1/attachments?{query}", body=body, content_type=kw.pop("content_type", "text/plain"), **kw
    )


def query(id: str, json: Any, **kw: Any) -> Case:
    return Case(id, "POST", "/v1/attachments/query", json=json, **kw)


def listing(id: str, params: str, **kw: Any) -> Case:
    return Case(id, "GET", f"/v1/attachments?{params}", **kw)


TOKENS = [
    Case("token: none on create", "POST", "/v1/attachments", json=TEXT, auth="none", status=401),
    Case("token: Basic scheme", "GET", "/v1/attachments", auth="Basic bWFsbG9yeTpodW50ZXIy", status=401),
    Case("token: Bearer and nothing", "GET", "/v1/attachments", auth="Bearer ", status=401),
    Case("token: garbage", "GET", "/v1/attachments", auth="Bearer not.a.jwt", status=401),
    Case(
        "token: other secret",
        "GET",
        "/v1/attachments",
        auth=bearer({}, secret=OTHER_SECRET),
        status=401,
    ),
    Case(
        "token: alg none",
        "POST",
        "/v1/attachments",
        json=TEXT,
        auth=lambda account: "Bearer " + unsigned_token({"account": account, "sub": "m", "scope": WRITE}),
        status=401,
    ),
    Case(
        "token: expired",
        "GET",
        "/v1/attachments",
        auth=bearer({"exp": int(time.time()) - 7200}),
        status=401,
    ),
    Case(
        "token: not yet valid",
        "GET",
        "/v1/attachments",
        auth=bearer({"nbf": int(time.time()) + 7200}),
        status=401,
    ),
    Case("token: exp is a string", "GET", "/v1/attachments", auth=bearer({"exp": "never"}), status=401),
    Case(
        "token: no account claim",
        "GET",
        "/v1/attachments",
        auth="Bearer " + jwt.encode({"sub": "m", "scope": READ}, JWT_SECRET, algorithm="HS256"),
        status=401,
    ),
    Case(
        "token: account path traversal",
        "POST",
        "/v1/attachments",
        json=TEXT,
        auth=bearer({"account": "../../objects/victim"}),
        status=401,
    ),
    Case(
        "token: account with a NUL",
        "GET",
        "/v1/attachments",
        auth=bearer({"account": "acct\x00x"}),
        status=401,
    ),
    Case(
        "token: account is a list",
        "GET",
        "/v1/attachments",
        auth=bearer({"account": ["a", "b"]}),
        status=401,
    ),
    Case(
        "token: account too long",
        "GET",
        "/v1/attachments",
        auth=bearer({"account": "a" * 65}),
        status=401,
    ),
    Case(
        "token: sub_type Admin",
        "GET",
        "/v1/attachments",
        auth=bearer({"sub_type": "Admin"}),
        status=401,
    ),
    Case(
        "token: RS256 header on an HS256 key",
        "GET",
        "/v1/attachments",
        auth=bearer({}, tamper=lambda t: t.replace("eyJhbGciOiJIUzI1NiIs", "eyJhbGciOiJSUzI1NiIs")),
        status=401,
    ),
    Case(
        "token: in the query string", "GET", "/v1/attachments?access_token=" + forged_token({}), auth="none", status=401
    ),
    Case("scope: read-only creates", "POST", "/v1/attachments", json=TEXT, auth="read", status=403),
    Case("scope: read-only patches", "PATCH", f"/v1/attachments/{ID}", json={"name": "x"}, auth="read", status=403),
    Case("scope: read-only deletes", "DELETE", f"/v1/attachments/{ID}", auth="read", status=403),
    Case(
        "scope: read-only places a target",
        "PUT",
        "/v1/targets/Ticket/1",
        json={"parent": None},
        auth="read",
        status=403,
    ),
    Case(
        "scope: read-only links",
        "PUT",
        "/v1/targets/Note/1/links/attachments",
        json={"ids": []},
        auth="read",
        status=403,
    ),
    Case("scope: read-only closes a session", "POST", "/v1/sessions/s1/close", auth="read", status=403),
    Case(
        "scope: none reads",
        "GET",
        "/v1/attachments",
        auth=bearer({"scope": "profile email"}),
        status=403,
    ),
    Case(
        "scope: none downloads",
        "GET",
        f"/v1/attachments/{ID}/file",
        auth=bearer({"scope": ""}),
        status=403,
    ),
    Case(
        "token: HS256 signed with the RS256 public key",
        "GET",
        "/v1/attachments",
        auth=lambda account: "Bearer " + hs256_with(RSA_PUBLIC, account),
        status=401,
        settings={"jwt_public_key": RSA_PUBLIC},
    ),
]

FIELDS = [
    create("fields: publish false", {**TEXT, "publish": False}, status=400),
    create("fields: attachment_type []", {**TEXT, "attachment_type": []}, status=400),
    create("fields: created_from {}", {**TEXT, "created_from": {}}, status=400),
    create("fields: available 'yes'", {**TEXT, "available": "yes"}, status=400),
    create("fields: available 0", {**TEXT, "available": 0}, status=400),
    create("fields: display_order 1.5", {**TEXT, "display_order": 1.5}, status=400),
    create("fields: display_order true", {**TEXT, "display_order": True}, status=400),
    create("fields: display_order 2**40", {**TEXT, "display_order": 2**40}, status=400),
    create("fields: target_id {}", {**TEXT, "target_id": {}}, status=400),
    create("fields: target_id []", {**TEXT, "target_id": []}, status=400),
    create("fields: target_type starts with a digit", {**TEXT, "target_type": 123}, status=400),
    create("fields: target_type SQL", {**TEXT, "target_type": "Task'; DROP TABLE attachments;--"}, status=400),
    create("fields: target_type too long", {**TEXT, "target_type": "T" * 10_000}, status=400),
    create("fields: name a list", {**TEXT, "name": ["x"]}, status=400),
    create("fields: name with a newline", {**TEXT, "name": "a\r\nX-Injected: 1"}, status=400),
    create("fields: filename a number", {**TEXT, "filename": 5}, status=400),
    create("fields: size negative", {**TEXT, "size": -1}, status=400),
    create("fields: size a string", {**TEXT, "size": "12"}, status=400),
    create("fields: status unknown", {**TEXT, "status": "approved-by-me"}, status=400),
    create("fields: parent_attachment_id not a uuid", {**TEXT, "parent_attachment_id": "../x"}, status=400),
    create("fields: session_token an object", {**TEXT, "session_token": {"a": 1}}, status=400),
    create("fields: content_type a list", {**TEXT, "content_type": ["text/html"]}, status=400),
    create("fields: account_id smuggled", {**TEXT, "account_id": "victim"}, status=400, code="unknown_field"),
    create("fields: id smuggled", {**TEXT, "id": ID}, status=400, code="unknown_field"),
    create(
        "fields: storage_key smuggled", {**TEXT, "storage_key": "objects/victim/x"}, status=400, code="unknown_field"
    ),
    create("fields: created_by smuggled", {**TEXT, "created_by": {"type": "User", "id": "root"}}, status=400),
    create("fields: parent without id", {**TEXT, "parent": {"type": "Project"}}, status=400),
    create("fields: parent a string", {**TEXT, "parent": "Project:1"}, status=400),
    create("fields: target_id without type", {"target_id": "1", "filename": "a.txt", "data": B64}, status=400),
    create("fields: no target at all", {"filename": "a.txt", "data": B64}, status=400),
    create(
        "fields: URL link to javascript:", {**T, "attachment_type": "URL", "url": "javascript:alert(1)"}, status=400
    ),
    # A FILE_LINK may name a file:// URL or a UNC path (stored, never fetched); a URL link or a fetch may not.
    create("fields: URL link to file:", {**T, "attachment_type": "URL", "url": "file:///etc/passwd"}, status=400),
    create("fields: fetch from file:", {**T, "url": "file:///etc/passwd"}, status=400),
    create(
        "fields: FILE_LINK to javascript:", {**T, "attachment_type": "FILE_LINK", "url": "javascript:x"}, status=400
    ),
    create(
        "fields: URL link with data", {**T, "attachment_type": "URL", "url": "https://e.test/", "data": B64}, status=400
    ),
    create(
        "fields: a Contact publishes internally",
        {**TEXT, "publish": "internal"},
        auth=bearer({"sub_type": "Contact"}),
        status=400,
    ),
    create("bulk: attachments an object", {"attachments": {"0": TEXT}}, status=400),
    create("bulk: attachments empty", {"attachments": []}, status=400),
    create("bulk: eleven attachments", {"attachments": [TEXT] * 11}, status=400),
    create("bulk: an item not an object", {"attachments": [TEXT, "x"]}, status=400),
    create("bulk: mode a number", {"attachments": [TEXT], "mode": 1}, status=400),
    create("bulk: a smuggled top-level key", {"attachments": [TEXT], "account_id": "victim"}, status=400),
    create("bulk: atomic with one bad item", {"attachments": [TEXT, {**TEXT, "filename": "evil.exe"}]}),
]

SOURCES = [
    create("data: a number", {**T, "filename": "a.txt", "data": 12345}, status=400),
    create("data: an object", {**T, "filename": "a.txt", "data": {"base64": B64}}, status=400),
    create("data: empty", {**T, "filename": "a.txt", "data": ""}, status=400),
    create("data: URL-safe alphabet", {**T, "filename": "a.bin.txt", "data": "-_-_"}, status=400),
    create("data: padding inside", {**T, "filename": "a.txt", "data": "aGk=aGk="}, status=400),
    create("data: only padding", {**T, "filename": "a.txt", "data": "===="}, status=400),
    create("data: a NUL", {**T, "filename": "a.txt", "data": "aGk\u0000"}, status=400),
    create("data: URI not base64", {**T, "filename": "a.txt", "data": "data:text/plain,hello"}, status=400),
    create("data: URI malformed type", {**T, "filename": "a.txt", "data": "data:te xt/pl;ain;base64,aGk="}, status=400),
    create("data: URI without comma", {**T, "filename": "a.txt", "data": "data:text/plain;base64"}, status=400),
    create("data: URI of HTML, no name", {**T, "data": "data:text/html;base64," + b64(HTML)}, status=400),
    create(
        "data: URI of SVG named png",
        {**T, "filename": "a.png", "data": "data:image/png;base64," + b64(SVG)},
        status=400,
    ),
    create(
        "data: URI declares jpeg, holds HTML",
        {**T, "filename": "a.jpg", "data": "data:image/jpeg;base64," + b64(HTML)},
        status=400,
    ),
    create("data: and url", {**TEXT, "url": "https://example.test/a.txt"}, status=400),
    create(
        "data: over the file limit",
        {**T, "filename": "a.txt", "data": b64(b"x" * 2000)},
        status=413,
        settings={"max_file_bytes": 1000},
    ),
    create(
        "data: declared size lies low",
        {**T, "filename": "a.txt", "size": 1, "data": b64(b"x" * 2000)},
        settings={"max_file_bytes": 1000},
    ),
    create("data: pixel bomb PNG", {**T, "filename": "bomb.png", "data": b64(png_bomb())}, status=422),
    create("data: pixel bomb JPEG", {**T, "filename": "bomb.jpg", "data": b64(jpeg_bomb())}, status=422),
    create("url: ftp", {**T, "url": "ftp://example.test/a.txt"}, status=400),
    create("url: gopher to redis", {**T, "url": "gopher://127.0.0.1:6379/_FLUSHALL"}, status=400),
    create("url: file", {**T, "url": "file:///etc/passwd"}, status=400),
    create("url: credentials", {**T, "url": "http://admin:admin@example.test/"}, status=400),
    create("url: port 0", {**T, "url": "http://example.test:0/a"}, status=400),
    create("url: port 99999", {**T, "url": "http://example.test:99999/a"}, status=400),
    create("url: no host", {**T, "url": "http:///a.txt"}, status=400),
    create("url: a CRLF", {**T, "url": "http://example.test/a\r\nHost: evil"}, status=400),
]

UPLOADS = [
    form("upload: HTML named .txt", upload("notes.txt", HTML, "text/plain"), status=400),
    form("upload: SVG named .png", upload("logo.png", SVG, "image/png"), status=400),
    form("upload: SVG as .svg", upload("logo.svg", SVG, "image/svg+xml"), status=400),
    form("upload: XXE named .txt", upload("data.txt", XML), status=400),
    form("upload: PHP named .jpg", upload("avatar.jpg", PHP, "image/jpeg"), status=400),
    form("upload: EXE named .pdf", upload("invoice.pdf", EXE, "application/pdf"), status=400),
    form("upload: ELF named .txt", upload("readme.txt", ELF), status=400),
    form("upload: double extension .jpg.exe", upload("photo.jpg.exe", EXE), status=400),
    form("upload: .html", upload("page.html", HTML, "text/html"), status=400),
    form("upload: polyglot JPEG+HTML named .html", upload("page.html", POLYGLOT, "text/html"), status=400),
    form("upload: .php", upload("shell.php", PHP), status=400),
    form("upload: traversal to .exe", upload("../../../../tmp/evil.exe", EXE), status=400),
    form("upload: backslash traversal to .bat", upload("..\\..\\startup\\run.bat", b"@echo off\r\n"), status=400),
    form("upload: RTL override hides .exe", upload("invoice\u202egpj.exe", EXE), status=400),
    form("upload: trailing dot .exe.", upload("evil.exe.", EXE), status=400),
    form("upload: nameless HTML", multipart(target_fields(), part("file", HTML)), status=400),
    form("upload: empty file", upload("empty.txt", b""), status=400),
    form("upload: truncated JPEG", upload("cut.jpg", jpeg_bytes(200, 200)[:300], "image/jpeg"), status=422),
    form("upload: pixel bomb PNG", upload("bomb.png", png_bomb(), "image/png"), status=422),
    form("upload: pixel bomb GIF", upload("bomb.gif", gif_bomb(), "image/gif"), status=422),
    form("upload: over the file limit", upload("big.txt", b"x" * 5000), status=413, settings={"max_file_bytes": 1000}),
    form(
        "upload: eleven files",
        multipart(target_fields(), *(part("file", b"hi", filename=f"{i}.txt") for i in range(11))),
        status=400,
    ),
    form(
        "upload: file and url",
        multipart(target_fields(), part("url", "https://e.test/a"), part("file", b"hi", filename="a.txt")),
        status=400,
    ),
    form("upload: data as a form field", multipart(target_fields(), part("data", B64)), status=400),
    form(
        "upload: available maybe",
        multipart(target_fields(), part("available", "maybe"), part("file", b"hi", filename="a.txt")),
        status=400,
    ),
    form(
        "upload: display_order 1e3",
        multipart(target_fields(), part("display_order", "1e3"), part("file", b"hi", filename="a.txt")),
        status=400,
    ),
    form(
        "upload: parent not JSON",
        multipart(target_fields(), part("parent", "{oops"), part("file", b"hi", filename="a.txt")),
        status=400,
    ),
    form(
        "upload: account_id smuggled",
        multipart(target_fields(), part("account_id", "victim"), part("file", b"hi", filename="a.txt")),
        status=400,
    ),
    form(
        "upload: mode sometimes",
        multipart(target_fields(), part("mode", "sometimes"), part("file", b"hi", filename="a.txt")),
        status=400,
    ),
    form("multipart: no boundary", upload("a.txt", b"hi"), content_type="multipart/form-data", status=400),
    form(
        "multipart: boundary of 71",
        upload("a.txt", b"hi"),
        content_type="multipart/form-data; boundary=" + "b" * 71,
        status=400,
    ),
    form(
        "multipart: wrong boundary",
        upload("a.txt", b"hi"),
        content_type="multipart/form-data; boundary=other",
        status=400,
    ),
    form(
        "multipart: no closing boundary",
        multipart(target_fields(), part("file", b"hi", filename="a.txt"), close=False),
        status=400,
    ),
    form(
        "multipart: nested",
        multipart(target_fields(), part("file", b"--x--", content_type="multipart/mixed; boundary=x")),
        status=400,
    ),
    form("multipart: junk after a boundary", f"--{BOUNDARY}junk\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode(), status=400),
    form(
        "multipart: header line of 9 KB",
        multipart(
            target_fields(),
            raw_part(f'Content-Disposition: form-data; name="file"; filename="{"a" * 9000}.txt"', body="hi"),
        ),
        status=400,
    ),
    form(
        "multipart: 40 part headers",
        multipart(
            f"--{BOUNDARY}\r\n".encode()
            + b"".join(b"X-H%d: 1\r\n" % i for i in range(40))
            + b'Content-Disposition: form-data; name="target_type"\r\n\r\nTask\r\n'
        ),
        status=400,
    ),
    form(
        "multipart: two dispositions",
        multipart(
            raw_part(
                'Content-Disposition: form-data; name="target_type"',
                'Content-Disposition: form-data; name="file"; filename="a.txt"',
                body="Task",
            )
        ),
        status=400,
    ),
    form(
        "multipart: a field without a name",
        multipart(target_fields(), f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx\r\n".encode()),
        status=400,
    ),
    form(
        "multipart: a field of 70 KB",
        multipart(target_fields(), part("name", "n" * 70_000), part("file", b"hi", filename="a.txt")),
        status=400,
    ),
    form("multipart: 201 fields", multipart(*(part(f"f{i}", "1") for i in range(201))), status=400),
    form(
        "multipart: a field not UTF-8",
        multipart(target_fields(), part("name", b"\xff\xfe\xfd"), part("file", b"hi", filename="a.txt")),
        status=400,
    ),
    form("multipart: only the closing boundary", f"--{BOUNDARY}--\r\n".encode(), status=400),
    form(
        "multipart: header without a colon",
        multipart(f"--{BOUNDARY}\r\nContent-Disposition form-data\r\n\r\nx\r\n".encode()),
        status=400,
    ),
    raw_upload(
        "raw: .exe by query",
        "target_type=Task&target_id=1&filename=evil.exe",
        EXE,
        content_type="application/octet-stream",
        status=400,
    ),
    raw_upload("raw: HTML as text/plain", "target_type=Task&target_id=1&filename=a.txt", HTML, status=400),
    raw_upload(
        "raw: traversal in Content-Disposition",
        "target_type=Task&target_id=1",
        EXE,
        content_type="application/octet-stream",
        headers={"Content-Disposition": 'attachment; filename="../../evil.exe"'},
        status=400,
    ),
    raw_upload(
        "raw: filename* hides .html",
        "target_type=Task&target_id=1",
        HTML,
        headers={"Content-Disposition": "attachment; filename*=UTF-8''%2e%2e%2fpage.html"},
        status=400,
    ),
    raw_upload(
        "raw: account_id smuggled", "target_type=Task&target_id=1&filename=a.txt&account_id=victim", b"hi", status=400
    ),
    raw_upload(
        "raw: data in the query too", f"target_type=Task&target_id=1&filename=a.txt&data={B64}", b"hi", status=400
    ),
    raw_upload(
        "raw: available maybe", "target_type=Task&target_id=1&filename=a.txt&available=maybe", b"hi", status=400
    ),
    raw_upload("raw: no target", "filename=a.txt", b"hi", status=400),
    raw_upload(
        "raw: over the limit by Content-Length",
        "target_type=Task&target_id=1&filename=a.txt",
        b"x" * 5000,
        status=413,
        settings={"max_file_bytes": 1000},
    ),
    raw_upload(
        "gzip bomb: raw body",
        "target_type=Task&target_id=1&filename=a.txt",
        gz(b"a" * 3_000_000),
        headers={"Content-Encoding": "gzip"},
        status=413,
        settings={"max_file_bytes": 100_000},
    ),
    raw_upload(
        "gzip: a body that does not inflate",
        "target_type=Task&target_id=1&filename=a.txt",
        b"\x1f\x8b\x08\x00garbage" * 10,
        headers={"Content-Encoding": "gzip"},
        status=400,
    ),
    raw_upload(
        "encoding: unknown coding",
        "target_type=Task&target_id=1&filename=a.txt",
        b"hi",
        headers={"Content-Encoding": "x-evil"},
        status=415,
    ),
    raw_upload(
        "encoding: stacked codings",
        "target_type=Task&target_id=1&filename=a.txt",
        gz(gz(b"hi")),
        headers={"Content-Encoding": "gzip, gzip"},
        status=415,
    ),
    form(
        "gzip bomb: multipart",
        gz(upload("a.txt", b"a" * 3_000_000)),
        headers={"Content-Encoding": "gzip"},
        status=413,
        settings={"max_file_bytes": 100_000},
    ),
    Case(
        "gzip bomb: JSON body",
        "POST",
        "/v1/attachments",
        body=gz(b" " * 3_000_000 + orjson.dumps(TEXT)),
        content_type="application/json",
        headers={"Content-Encoding": "gzip"},
        status=413,
        settings={"max_json_bytes": 100_000},
    ),
    form(
        "upload: a name index of 5000 digits",
        multipart(target_fields(), part("name[" + "9" * 5000 + "]", "x"), part("file", b"hi", filename="a.txt")),
        status=400,
    ),
    form(
        "upload: display_order in other digits",
        multipart(target_fields(), part("display_order", "١٠"), part("file", b"hi", filename="a.txt")),
        status=400,
    ),
    form(
        "upload: display_order with a plus",
        multipart(target_fields(), part("display_order", "+1"), part("file", b"hi", filename="a.txt")),
        status=400,
    ),
    form(
        "upload: size with underscores",
        multipart(target_fields(), part("size", "1_000"), part("file", b"hi", filename="a.txt")),
        status=400,
    ),
    raw_upload("raw: an empty body", "target_type=Task&target_id=1&filename=a.txt", b"", status=400),
    raw_upload(
        "raw: target_id twice",
        "target_type=Task&target_id=1&target_id=2&filename=a.txt",
        b"hi",
        status=400,
        code="duplicate_parameter",
    ),
    raw_upload(
        "raw: query not UTF-8",
        "target_type=Task&target_id=%ff%fe&filename=a.txt",
        b"hi",
        status=400,
        code="invalid_url",
    ),
]

JSON = [
    Case(
        "json: truncated",
        "POST",
        "/v1/attachments",
        body=b'{"target_type": "Task", ',
        content_type="application/json",
        status=400,
    ),
    Case(
        "json: trailing garbage",
        "POST",
        "/v1/attachments",
        body=orjson.dumps(TEXT) + b" x",
        content_type="application/json",
        status=400,
    ),
    Case(
        "json: NaN",
        "POST",
        "/v1/attachments",
        body=b'{"target_type": "Task", "target_id": NaN}',
        content_type="application/json",
        status=400,
    ),
    Case(
        "json: 100000 brackets deep",
        "POST",
        "/v1/attachments/query",
        body=b"[" * 100_000 + b"]" * 100_000,
        content_type="application/json",
        status=400,
    ),
    Case(
        "json: not UTF-8",
        "POST",
        "/v1/attachments",
        body=b'{"name": "\xff\xfe"}',
        content_type="application/json",
        status=400,
    ),
    Case(
        "json: UTF-16",
        "POST",
        "/v1/attachments",
        body=orjson.dumps(TEXT).decode().encode("utf-16"),
        content_type="application/json",
        status=400,
    ),
    Case(
        "json: lone surrogate",
        "POST",
        "/v1/attachments",
        body=b'{"target_type": "Task", "target_id": "\\ud800", "filename": "a.txt", "data": "aGk="}',
        content_type="application/json",
        status=400,
    ),
    Case("json: empty body", "POST", "/v1/attachments", body=b"", content_type="application/json", status=400),
    create("json: an array", [TEXT], status=400),
    create("json: a string", "attachment", status=400),
    create("json: null", None, status=400),
    Case(
        "json: 1e999",
        "PATCH",
        f"/v1/attachments/{ID}",
        body=b'{"display_order": 1e999}',
        content_type="application/json",
        status=400,
    ),
    Case(
        "json: text/plain PATCH",
        "PATCH",
        f"/v1/attachments/{ID}",
        body=b'{"name": "x"}',
        content_type="text/plain",
        status=415,
    ),
    Case("json: PATCH over its size", "PATCH", f"/v1/attachments/{ID}", json={"name": "x" * 70_000}, status=413),
    Case("patch: account_id", "PATCH", f"/v1/attachments/{ID}", json={"account_id": "victim"}, status=400),
    Case("patch: storage_key", "PATCH", f"/v1/attachments/{ID}", json={"storage_key": "objects/victim/x"}, status=400),
    Case("patch: available null", "PATCH", f"/v1/attachments/{ID}", json={"available": None}, status=400),
    Case("patch: display_order a string", "PATCH", f"/v1/attachments/{ID}", json={"display_order": "1"}, status=400),
    Case("patch: empty object", "PATCH", f"/v1/attachments/{ID}", json={}, status=400),
    Case("patch: a list", "PATCH", f"/v1/attachments/{ID}", json=[{"name": "x"}], status=400),
    Case("links: ids an object", "PUT", "/v1/targets/Note/1/links/attachments", json={"ids": {"0": ID}}, status=400),
    Case("links: 501 ids", "PUT", "/v1/targets/Note/1/links/attachments", json={"ids": [ID] * 501}, status=400),
    Case(
        "links: an id an object",
        "PUT",
        "/v1/targets/Note/1/links/attachments",
        json={"ids": [{"$ne": None}]},
        status=400,
    ),
    Case("links: ids and id", "PUT", "/v1/targets/Note/1/links/attachments", json={"ids": [], "id": ID}, status=400),
    Case("links: field with a dot", "PUT", "/v1/targets/Note/1/links/a.b", json={"ids": []}, status=400),
    Case(
        "targets: parent of itself",
        "PUT",
        "/v1/targets/Ticket/1",
        json={"parent": {"type": "Ticket", "id": "1"}},
        status=400,
    ),
    Case(
        "targets: extra key", "PUT", "/v1/targets/Ticket/1", json={"parent": None, "account_id": "victim"}, status=400
    ),
    Case("targets: type with a space", "PUT", "/v1/targets/Tic%20ket/1", json={"parent": None}, status=400),
    Case("session: token of 300", "POST", "/v1/sessions/" + "s" * 300 + "/close", status=404),
    Case(
        "idempotency: key of 300",
        "POST",
        "/v1/attachments",
        json=TEXT,
        headers={"Idempotency-Key": "k" * 300},
        status=400,
    ),
    Case("patch: name of spaces", "PATCH", f"/v1/attachments/{ID}", json={"name": "   "}, status=400),
    Case(
        "targets: id not UTF-8", "PUT", "/v1/targets/Ticket/%ff", json={"parent": None}, status=400, code="invalid_url"
    ),
]

READS = [
    listing("list: limit 0", "limit=0", status=400),
    listing("list: limit 501", "limit=501", status=400),
    listing("list: limit huge", "limit=99999999999999999999999", status=400),
    listing("list: limit hex", "limit=0x10", status=400),
    listing("list: order_by injection", "order_by=name;DROP%20TABLE%20attachments", status=400),
    listing("list: order_by an internal column", "order_by=storage_key", status=400),
    listing("list: order_by twice", "order_by=name,-name", status=400),
    listing("list: order_by empty item", "order_by=name,,size", status=400),
    listing("list: versions none", "versions=none", status=400),
    listing("list: available 2", "available=2", status=400),
    listing("list: include_canceled maybe", "include_canceled=maybe", status=400),
    listing("list: descendants without target", "descendants=true", status=400),
    listing("list: ancestor without id", "ancestor=Ticket", status=400),
    listing("list: account_id", "account_id=victim", status=400),
    listing("list: target_type SQL", "target_type=Task%27%20OR%201%3D1--&target_id=1", status=400),
    listing("cursor: another order", "cursor=" + list_cursor("name", ["a"]), status=400),
    listing(
        "cursor: SQL in a key",
        "cursor=" + list_cursor("display_order,created_at", ["1 OR 1=1", "2024-01-01T00:00:00Z"]),
        status=400,
    ),
    listing(
        "cursor: integer past int32",
        "cursor=" + list_cursor("display_order,created_at", [2**31, "2024-01-01T00:00:00Z"]),
        status=400,
    ),
    listing(
        "cursor: year zero",
        "cursor=" + list_cursor("display_order,created_at", [0, "0000-01-01T00:00:00Z"]),
        status=400,
    ),
    listing(
        "cursor: naive time",
        "cursor=" + list_cursor("display_order,created_at", [0, "2024-01-01T00:00:00"]),
        status=400,
    ),
    listing(
        "cursor: id not a uuid",
        "cursor=" + list_cursor("display_order,created_at", [0, "2024-01-01T00:00:00Z"], "' OR 1=1"),
        status=400,
    ),
    listing("cursor: a JSON list", "cursor=" + base64.urlsafe_b64encode(b"[1,2,3]").decode(), status=400),
    listing("cursor: a query cursor on a list", "cursor=" + list_cursor("", []), status=400),
    Case("count: limit is not its parameter", "GET", "/v1/attachments/count?limit=1", status=400),
    Case("get: include_canceled maybe", "GET", f"/v1/attachments/{ID}?include_canceled=maybe", status=400),
    Case("get: id with SQL", "GET", "/v1/attachments/1%27%20OR%20%271%27=%271", status=404),
    Case("get: id of 36 dashes", "GET", "/v1/attachments/" + "-" * 36, status=404),
    Case("download: variant traversal", "GET", f"/v1/attachments/{ID}/file/..%2f..%2fetc%2fpasswd", status=404),
    Case("download: download maybe", "GET", f"/v1/attachments/{ID}/file?download=maybe", status=400),
    query(
        "query: max_records 0", {"filter": [{"field": "name", "op": "eq", "value": "a"}], "max_records": 0}, status=400
    ),
    query(
        "query: max_records 501",
        {"filter": [{"field": "name", "op": "eq", "value": "a"}], "max_records": 501},
        status=400,
    ),
    query(
        "query: max_records a string",
        {"filter": [{"field": "name", "op": "eq", "value": "a"}], "max_records": "10"},
        status=400,
    ),
    query(
        "query: max_records 1.5",
        {"filter": [{"field": "name", "op": "eq", "value": "a"}], "max_records": 1.5},
        status=400,
    ),
    query(
        "query: max_records true",
        {"filter": [{"field": "name", "op": "eq", "value": "a"}], "max_records": True},
        status=400,
    ),
    query(
        "query: include_fields a string",
        {"filter": [{"field": "name", "op": "eq", "value": "a"}], "include_fields": "name"},
        status=400,
    ),
    query(
        "query: include_fields internal",
        {"filter": [{"field": "name", "op": "eq", "value": "a"}], "include_fields": ["storage_key"]},
        status=400,
    ),
    query("query: cursor a number", {"filter": [{"field": "name", "op": "eq", "value": "a"}], "cursor": 1}, status=400),
    query(
        "query: cursor of a list",
        {
            "filter": [{"field": "name", "op": "eq", "value": "a"}],
            "cursor": list_cursor("display_order,created_at", [0, "2024-01-01T00:00:00Z"]),
        },
        status=400,
    ),
    query("query: empty filter", {"filter": []}, status=400),
    query("query: no filter", {"max_records": 10}, status=400),
    query("query: account_id", {"filter": [{"field": "account_id", "op": "noteq", "value": "x"}]}, status=400),
    query("query: storage_key", {"filter": [{"field": "storage_key", "op": "exist"}]}, status=400),
    query("query: op like", {"filter": [{"field": "name", "op": "like", "value": "%"}]}, status=400),
    query("query: raw SQL key", {"filter": [{"field": "name", "op": "eq", "value": "a", "sql": "1=1"}]}, status=400),
    query("query: size as a string", {"filter": [{"field": "size", "op": "gt", "value": "0 OR 1=1"}]}, status=400),
    query("query: size past bigint", {"filter": [{"field": "size", "op": "gt", "value": 2**63}]}, status=400),
    query(
        "query: created_at yesterday",
        {"filter": [{"field": "created_at", "op": "gt", "value": "yesterday"}]},
        status=400,
    ),
    query("query: id not a uuid", {"filter": [{"field": "id", "op": "eq", "value": "1 OR 1=1"}]}, status=400),
    query(
        "query: contains over the length",
        {"filter": [{"field": "name", "op": "contains", "value": "n" * 100_000}]},
        status=400,
    ),
    query("query: in with 501", {"filter": [{"field": "name", "op": "in", "value": ["a"] * 501}]}, status=400),
    query("query: 201 conditions", {"filter": [{"field": "name", "op": "eq", "value": "a"}] * 201}, status=400),
    query("query: nested 17 deep", {"filter": [nested(17)]}, status=400),
    query(
        "query: group op xor",
        {"filter": [{"op": "xor", "items": [{"field": "name", "op": "eq", "value": "a"}]}]},
        status=400,
    ),
    query("query: exist with a value", {"filter": [{"field": "name", "op": "exist", "value": "a"}]}, status=400),
    query("query: ancestor with gt", {"filter": [{"field": "ancestor", "op": "gt", "value": "Ticket:1"}]}, status=400),
    query(
        "query: account_id at the top",
        {"filter": [{"field": "name", "op": "eq", "value": "a"}], "account_id": "victim"},
        status=400,
    ),
    Case(
        "query: count with a bad filter",
        "POST",
        "/v1/attachments/query/count",
        json={"filter": [{"field": "size", "op": "contains", "value": "1"}]},
        status=400,
    ),
    Case("query: GET", "GET", "/v1/attachments/query", status=405),
    listing("list: limit with a space", "limit=%2010", status=400),
    listing("list: limit with a plus", "limit=%2B10", status=400),
    listing("list: limit in other digits", "limit=" + quote("١٠"), status=400),
    listing("list: limit with underscores", "limit=1_0", status=400),
    listing(
        "list: a parameter twice", "target_type=Task&target_id=1&target_id=2", status=400, code="duplicate_parameter"
    ),
    listing("list: cursor twice", "cursor=a&cursor=b", status=400, code="duplicate_parameter"),
    listing("list: query not UTF-8", "target_type=Task&target_id=%c3%28", status=400, code="invalid_url"),
    query("query: publish as a boolean", {"filter": [{"field": "publish", "op": "eq", "value": False}]}, status=400),
    query(
        "query: a condition in place of the list", {"filter": {"field": "name", "op": "eq", "value": "a"}}, status=400
    ),
]

CASES = TOKENS + FIELDS + SOURCES + UPLOADS + JSON + READS


def _authorization(case_auth: str | Callable[[str], str], svc) -> dict[str, str]:
    if callable(case_auth):
        return {"Authorization": case_auth(svc.account)}
    if case_auth == "write":
        return svc.auth()
    if case_auth == "read":
        return svc.auth(scope=READ)
    if case_auth == "none":
        return {}
    return {"Authorization": case_auth}


async def assert_refused(resp, *, status: int | None = None, code: str | None = None, secrets: list[str]) -> dict:
    text = await resp.text()
    assert 400 <= resp.status < 500, f"{resp.status}: {text[:500]}"
    if status is not None:
        assert resp.status == status, f"{resp.status}: {text[:500]}"
    if resp.method == "HEAD":
        return {}
    assert resp.content_type == "application/json", f"{resp.content_type}: {text[:500]}"
    body = orjson.loads(text)
    assert set(body) <= {"error", "errors"}, body
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"] and isinstance(error["message"], str), body
    assert set(error) <= {"code", "message", "field", "limit", "retry_after_s"}, body
    if code is not None:
        assert error["code"] == code, body
    headers = "\n".join(f"{k}: {v}" for k, v in resp.headers.items())
    for secret in secrets:
        if len(secret) >= 8:
            assert secret not in text and secret not in headers, f"echoed a secret: {text[:500]}"
    assert "Traceback" not in text
    return error


async def assert_nothing_stored(svc) -> None:
    assert await svc.rows() == []
    assert await svc.events() == []
    assert await svc.settled_keys() == []


def _token_parts(headers: dict[str, str]) -> list[str]:
    value = headers.get("Authorization", "")
    token = value.partition(" ")[2]
    return [token, *token.split(".")] if token else [value]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_a_hostile_request_is_refused_and_leaves_nothing(make_service, case: Case):
    async with make_service(**case.settings) as svc:
        headers = {**_authorization(case.auth, svc), **case.headers}
        kwargs: dict[str, Any] = {"headers": headers}
        if case.json is not NOTHING:
            kwargs["json"] = case.json
        elif case.body is not None:
            kwargs["data"] = case.body
            headers["Content-Type"] = case.content_type or "application/octet-stream"
        resp = await svc.client.request(case.method, case.path, **kwargs)
        await assert_refused(resp, status=case.status, code=case.code, secrets=_token_parts(headers))
        await assert_nothing_stored(svc)


def test_the_table_is_long_and_its_ids_distinct():
    ids = [c.id for c in CASES] + [row[0] for row in SSRF + REDIRECTS + RAW] + [c.id for c in MATRIX]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 100


# --- URL fetches that must not reach what they name ------------------------------------------------------

# (id, URL with {port} for the test's loopback server). The service allows no private address at all.
SSRF = [
    ("ssrf: octal loopback", "http://0177.0.0.1:{port}/secret"),
    ("ssrf: hex loopback", "http://0x7f000001:{port}/secret"),
    ("ssrf: short loopback", "http://127.1:{port}/secret"),
    ("ssrf: octal dword loopback", "http://017700000001:{port}/secret"),
    ("ssrf: IPv4-mapped hex", "http://[::ffff:7f00:1]:{port}/secret"),
    ("ssrf: IPv4-compatible", "http://[::127.0.0.1]:{port}/secret"),
    ("ssrf: unspecified IPv6", "http://[::]:{port}/secret"),
    ("ssrf: trailing dot loopback", "http://127.0.0.1.:{port}/secret"),
    ("ssrf: cloud metadata", "http://169.254.169.254/latest/meta-data/iam/security-credentials/"),
    ("ssrf: AWS IPv6 metadata", "http://[fd00:ec2::254]/latest/meta-data/"),
    ("ssrf: private 10/8", "http://10.0.0.1/"),
    ("ssrf: private 172.16/12", "http://172.16.0.1/"),
    ("ssrf: private 192.168/16", "http://192.168.0.1/"),
    ("ssrf: carrier-grade NAT", "http://100.64.0.1/"),
    ("ssrf: link-local IPv6 with zone", "http://[fe80::1%25lo]/"),
    ("ssrf: multicast", "http://224.0.0.1/"),
    ("ssrf: broadcast", "http://255.255.255.255/"),
    ("ssrf: userinfo confusion", "http://example.test@127.0.0.1:{port}/secret"),
    ("ssrf: fragment confusion", "http://127.0.0.1:{port}#@example.test/secret"),
    ("ssrf: IPv4-mapped metadata", "http://[::ffff:169.254.169.254]/latest/meta-data/"),
    ("ssrf: NAT64 loopback", "http://[64:ff9b::7f00:1]:{port}/secret"),
]


@pytest.mark.parametrize(("name", "url"), SSRF, ids=[name for name, _ in SSRF])
async def test_a_url_to_a_private_address_is_refused_before_any_connection(make_service, remote, name, url):
    remote.add("/secret", b"internal only", "text/plain")
    async with make_service(fetch_allow_cidrs="") as svc:
        resp = await svc.upload_json({**T, "url": url.format(port=remote.server.port)})
        error = await assert_refused(resp, secrets=_token_parts(svc.auth()))
        assert (error["code"], error.get("field")) in {("url_refused", "url"), ("invalid_url", "url")}, error
        assert remote.hits == []
        await assert_nothing_stored(svc)


# Where the allowed server (127.0.0.1) redirects to; {port} is its port.
REDIRECTS = [
    ("redirect: to another loopback address", "http://127.0.0.2:{port}/secret"),
    ("redirect: to IPv6 loopback", "http://[::1]:{port}/secret"),
    ("redirect: to hex loopback", "http://0x7f.0.0.2:{port}/secret"),
    ("redirect: to cloud metadata", "http://169.254.169.254/latest/meta-data/"),
    ("redirect: scheme-relative to metadata", "//169.254.169.254/latest/meta-data/"),
    ("redirect: to file", "file:///etc/passwd"),
    ("redirect: to gopher", "gopher://127.0.0.1:6379/_FLUSHALL"),
    ("redirect: with credentials", "http://u:p@127.0.0.1:{port}/secret"),
    ("redirect: a loop", "/start"),
    ("redirect: to IPv4-mapped loopback", "http://[::ffff:127.0.0.2]:{port}/secret"),
]


@pytest.mark.parametrize(("name", "target"), REDIRECTS, ids=[name for name, _ in REDIRECTS])
async def test_a_redirect_to_where_a_url_may_not_go_is_refused(make_service, remote, name, target):
    remote.add("/secret", b"internal only", "text/plain")
    start = remote.add("/start", b"", headers={"Location": target.format(port=remote.server.port)})
    async with make_service(fetch_allow_cidrs="127.0.0.1/32") as svc:
        resp = await svc.upload_json({**T, "url": start})
        await assert_refused(resp, secrets=_token_parts(svc.auth()))
        assert "/secret" not in remote.hits
        await assert_nothing_stored(svc)


# --- bytes the HTTP parser refuses, on a raw socket ------------------------------------------------------

TOKEN_MARK = "{token}"
GOOD = "Host: attachd.test\r\nAuthorization: Bearer {token}\r\n"


# (id, raw request with {token} for the test's bearer token, expected status)
UPLOAD = "/v1/attachments?target_type=Task&target_id=1&filename=a.txt"


def http(method: str, target: str, *lines: str, body: str = "", good: bool = True) -> bytes:
    """A request with these header lines after a Host and the test's token (unless not ``good``)."""
    head = f"{method} {target} HTTP/1.1\r\n{GOOD if good else ''}" + "".join(f"{line}\r\n" for line in lines)
    return (head + "\r\n" + body).encode("latin-1")


# (id, raw request with {token} for the test's bearer token, expected status)
RAW = [
    (
        "raw: 9 KB Authorization header",
        http("GET", "/v1/attachments", "Host: a", "Authorization: Bearer {token}" + "A" * 9000, good=False),
        431,
    ),
    ("raw: 9 KB cookie after the token", http("GET", "/v1/attachments", "Cookie: " + "c" * 9000), 431),
    ("raw: 100 KB query string", http("GET", "/v1/attachments?target_type=" + "T" * 100_000), 414),
    ("raw: 101 headers", http("GET", "/v1/attachments", *(f"X-{i}: {i}" for i in range(101))), 431),
    (
        "raw: Content-Length and Transfer-Encoding",
        http(
            "POST",
            "/v1/attachments",
            "Content-Type: application/json",
            "Content-Length: 4",
            "Transfer-Encoding: chunked",
            body="0\r\n\r\n",
        ),
        400,
    ),
    (
        "raw: Transfer-Encoding and Content-Length",
        http("POST", "/v1/attachments", "Transfer-Encoding: chunked", "Content-Length: 4", body="0\r\n\r\n"),
        400,
    ),
    (
        "raw: two different Content-Lengths",
        http("POST", "/v1/attachments", "Content-Length: 2", "Content-Length: 20", body="{}"),
        400,
    ),
    ("raw: negative Content-Length", http("POST", "/v1/attachments", "Content-Length: -1"), 400),
    ("raw: Content-Length with a plus", http("POST", "/v1/attachments", "Content-Length: +2", body="{}"), 400),
    ("raw: Content-Length not a number", http("POST", "/v1/attachments", "Content-Length: 2abc", body="{}"), 400),
    (
        "raw: chunk size not hex",
        http("POST", UPLOAD, "Content-Type: text/plain", "Transfer-Encoding: chunked", body="ZZ\r\nhi\r\n0\r\n\r\n"),
        400,
    ),
    ("raw: Transfer-Encoding gzip only", http("POST", "/v1/attachments", "Transfer-Encoding: gzip"), 400),
    (
        "raw: Transfer-Encoding chunked twice",
        http("POST", "/v1/attachments", "Transfer-Encoding: chunked, chunked", body="0\r\n\r\n"),
        400,
    ),
    (
        "raw: Content-Encoding br (not supported)",
        http("POST", UPLOAD, "Content-Type: text/plain", "Content-Encoding: br", "Content-Length: 2", body="hi"),
        415,
    ),
    ("raw: space before the colon", http("GET", "/v1/attachments", "Transfer-Encoding : chunked"), 400),
    ("raw: obsolete line folding", http("GET", "/v1/attachments", "X-A: a", "  folded"), 400),
    ("raw: NUL in a header", http("GET", "/v1/attachments", "X-A: a\x00b"), 400),
    ("raw: bare LF", http("GET", "/v1/attachments").replace(b"\r\n", b"\n"), 400),
    ("raw: no Host in HTTP/1.1", http("GET", "/v1/attachments", "Authorization: Bearer {token}", good=False), 400),
    ("raw: two Hosts", http("GET", "/v1/attachments", "Host: evil.test"), 400),
    ("raw: control character in the path", http("GET", "/v1/attach\x01ments"), 400),
    ("raw: method with an @", http("G@T", "/v1/attachments"), 400),
    ("raw: unknown HTTP version", http("GET", "/v1/attachments").replace(b"HTTP/1.1", b"HTTP/9.9", 1), 400),
    ("raw: a word after the version", http("GET", "/v1/attachments").replace(b"HTTP/1.1", b"HTTP/1.1 please", 1), 400),
    ("raw: raw bytes in the request target", http("GET", "/v1/attachments?target_type=\xff\xfe"), 400),
    ("raw: HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    ("raw: TLS on the HTTP port", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64), 400),
    ("raw: PROPFIND", http("PROPFIND", "/v1/attachments", "Connection: close"), 405),
    ("raw: TRACE", http("TRACE", "/v1/attachments", "Connection: close"), 405),
    (
        "raw: Expect something else",
        http(
            "POST",
            "/v1/attachments",
            "Connection: close",
            "Content-Type: application/json",
            "Expect: 999-crazy",
            "Content-Length: 2",
            body="{}",
        ),
        417,
    ),
    # (A chunked upload without a length is a 411 only while a byte budget applies: tests/test_budget.py.)
]


async def exchange(host: str, port: int, data: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; read the response until the server closes the connection."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(("name", "data", "status"), RAW, ids=[name for name, _, _ in RAW])
async def test_what_the_http_parser_refuses_is_answered_in_the_error_shape(service, name, data, status):
    token = service.token()
    status_got, headers, body = await exchange(
        service.client.host, service.client.port, data.replace(TOKEN_MARK.encode(), token.encode())
    )
    assert status_got == status, body[:300]
    assert headers["content-type"].startswith("application/json")
    error = orjson.loads(body)["error"]
    assert error["code"] and error["message"], error
    for secret in [token, *token.split(".")]:
        assert secret.encode() not in body and secret not in str(headers)
    for leak in (b"Traceback", b"Got more than", b"Bearer", b"AAAA", b"TTTT", b"ccccc"):
        assert leak not in body
    await assert_nothing_stored(service)


# --- the two-tenant matrix -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cross:
    """A request of another tenant (``who``) that names account A's things; ``path`` is filled from A's."""

    id: str
    method: str
    path: Callable[[dict[str, str]], str]
    json: Any = NOTHING
    who: str = "B"  # B: another account; "A!" a look-alike of A's account; "none": no token (signed links)
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 404


def _link(variant: str, **change: Any) -> Callable[[dict[str, str]], str]:
    """A's signed link of ``variant``, with some of its parts changed."""

    def make(a: dict[str, str]) -> str:
        link = urlsplit(a[f"link_{change.pop('of', variant)}"] if "of" in change else a[f"link_{variant}"])
        params = {k: v[0] for k, v in parse_qs(link.query).items()}
        path = link.path.replace(f"/{link.path.rsplit('/', 1)[1]}", f"/{variant}")
        for key, value in change.items():
            if value is None:
                params.pop(key, None)
            else:
                params[key] = value(params[key]) if callable(value) else value
        return (
            path.replace(a["id"], a.get("swap_id", a["id"]))
            + "?"
            + "&".join(f"{k}={quote(str(v), safe='')}" for k, v in params.items())
        )

    return make


def _flip(text: str) -> str:
    return ("B" if text[0] != "B" else "C") + text[1:]


MATRIX = [
    Cross("tenant: get", "GET", lambda a: f"/v1/attachments/{a['id']}"),
    Cross("tenant: get with canceled", "GET", lambda a: f"/v1/attachments/{a['id']}?include_canceled=true"),
    Cross("tenant: download", "GET", lambda a: f"/v1/attachments/{a['id']}/file"),
    Cross("tenant: download original", "GET", lambda a: f"/v1/attachments/{a['id']}/file/original"),
    Cross("tenant: download thumbnail", "GET", lambda a: f"/v1/attachments/{a['id']}/file/thumbnail"),
    Cross("tenant: download small", "GET", lambda a: f"/v1/attachments/{a['id']}/file/small"),
    Cross(
        "tenant: download a range", "GET", lambda a: f"/v1/attachments/{a['id']}/file", headers={"Range": "bytes=0-99"}
    ),
    Cross(
        "tenant: download if-none-match",
        "GET",
        lambda a: f"/v1/attachments/{a['id']}/file",
        headers={"If-None-Match": "*"},
    ),
    Cross("tenant: HEAD download", "HEAD", lambda a: f"/v1/attachments/{a['id']}/file"),
    Cross("tenant: rename", "PATCH", lambda a: f"/v1/attachments/{a['id']}", json={"name": "pwned.jpg"}),
    Cross("tenant: hide", "PATCH", lambda a: f"/v1/attachments/{a['id']}", json={"available": False}),
    Cross("tenant: delete", "DELETE", lambda a: f"/v1/attachments/{a['id']}"),
    Cross("tenant: upload status", "GET", lambda a: f"/v1/uploads/{a['id']}"),
    Cross("tenant: close A's session", "POST", lambda a: "/v1/sessions/sess-a/close"),
    Cross("tenant: link A's upload", "PUT", lambda a: "/v1/targets/Note/n1/links/attachments", json="ids", status=400),
    Cross(
        "tenant: link A's upload as a single file",
        "PUT",
        lambda a: "/v1/targets/Document/d1/links/file",
        json="id",
        status=400,
    ),
    Cross("tenant: a new version of A's file", "POST", lambda a: "/v1/attachments", json="version", status=400),
    Cross("tenant: nest under A's attachment", "POST", lambda a: "/v1/attachments", json="nested", status=400),
    Cross("tenant: account in upper case", "GET", lambda a: f"/v1/attachments/{a['id']}", who="A!upper"),
    Cross("tenant: account with a trailing dot", "DELETE", lambda a: f"/v1/attachments/{a['id']}", who="A!dot"),
    Cross("signed: thumbnail's signature on small", "GET", _link("small", of="thumbnail"), who="none", status=403),
    Cross(
        "signed: original's signature on thumbnail", "GET", _link("thumbnail", of="original"), who="none", status=403
    ),
    Cross(
        "signed: a later expiry", "GET", _link("original", expires=lambda e: str(int(e) + 3600)), who="none", status=403
    ),
    Cross(
        "signed: expiry with a leading zero",
        "GET",
        _link("original", expires=lambda e: "0" + e),
        who="none",
        status=403,
    ),
    Cross("signed: negative expiry", "GET", _link("original", expires="-1"), who="none", status=403),
    Cross("signed: expiry of 13 digits", "GET", _link("original", expires="9" * 13), who="none", status=403),
    Cross("signed: no signature", "GET", _link("original", signature=None), who="none", status=403),
    Cross("signed: no expiry", "GET", _link("original", expires=None), who="none", status=403),
    Cross("signed: a flipped signature", "GET", _link("original", signature=_flip), who="none", status=403),
    Cross("signed: padded signature", "GET", _link("original", signature=lambda s: s + "="), who="none", status=403),
    Cross(
        "signed: non-ASCII signature", "GET", _link("original", signature=lambda s: "é" + s[1:]), who="none", status=403
    ),
    Cross("signed: another id", "GET", lambda a: _link("original")({**a, "swap_id": ID}), who="none", status=403),
    Cross(
        "signed: expired",
        "GET",
        lambda a: signing.signed_path(a["secret"].encode("latin-1"), a["id"], "original", int(time.time()) - 60),
        who="none",
        status=403,
    ),
    Cross(
        "signed: with the JWT secret",
        "GET",
        lambda a: signing.signed_path(JWT_SECRET.encode(), a["id"], "original", int(time.time()) + 600),
        who="none",
        status=403,
    ),
    Cross(
        "signed: variant in upper case",
        "GET",
        lambda a: _link("original")(a).replace("/original?", "/ORIGINAL?"),
        who="none",
    ),
    Cross(
        "signed: expires twice",
        "GET",
        lambda a: _link("original")(a) + "&expires=99999999999",
        who="none",
        status=400,
    ),
]


async def tenant_a(svc) -> dict[str, str]:
    """Account A's photo, in an upload session, with its signed links."""
    resp = await svc.upload_json(
        {**T, "filename": "a.jpg", "session_token": "sess-a", "data": b64(jpeg_bytes(320, 200))},
        headers={"Idempotency-Key": "a-key"},
    )
    assert resp.status == 201, await resp.text()
    record = await resp.json()
    return {
        "id": record["id"],
        "link_original": record["file"]["original"],
        "link_thumbnail": record["file"]["thumbnail"],
        "link_small": record["file"]["small"],
        "secret": svc.settings.link_secret.decode("latin-1"),
    }


def _cross_json(kind: Any, a: dict[str, str]) -> Any:
    return (
        {
            "ids": {"ids": [a["id"]]},
            "id": {"id": a["id"]},
            "version": {**T, "filename": "b.jpg", "version_of": a["id"], "data": b64(jpeg_bytes(64, 64))},
            "nested": {"filename": "b.txt", "parent_attachment_id": a["id"], "data": B64},
        }[kind]
        if isinstance(kind, str)
        else kind
    )


async def _state(svc, account: str) -> list[dict[str, Any]]:
    return [dict(row) for row in await svc.rows(account)]


@pytest.mark.parametrize("case", MATRIX, ids=[c.id for c in MATRIX])
async def test_another_tenant_reaches_nothing_of_account_a(service, case: Cross):
    a = await tenant_a(service)
    before = await _state(service, service.account)
    events_before = await service.events()
    keys_before = await service.stored_keys()
    b = {
        "B": service.other_account(),
        "A!upper": service.account.upper(),
        "A!dot": service.account + ".",
        "none": None,
    }[case.who]
    headers = {**(service.auth(b) if b else {}), **case.headers}
    kwargs: dict[str, Any] = {"headers": headers}
    if case.json is not NOTHING:
        kwargs["json"] = _cross_json(case.json, a)
    resp = await service.client.request(case.method, case.path(a), **kwargs)
    await assert_refused(resp, status=case.status, secrets=[*_token_parts(headers), a["secret"]])
    assert await _state(service, service.account) == before  # nothing of A's changed
    assert await service.events() == events_before
    assert await service.settled_keys() == keys_before
    if b:
        assert await service.rows(b) == []
        assert await service.events(b) == []
        assert [o.key async for o in service.storage.list(f"objects/{b}/")] == []


async def test_another_tenant_lists_queries_and_counts_none_of_account_a(service):
    a = await tenant_a(service)
    other = service.auth(service.other_account())
    for path in (
        "/v1/attachments?target_type=Task&target_id=1",
        "/v1/attachments?ancestor=Task:1",
        "/v1/attachments?versions=all&include_canceled=true",
    ):
        resp = await service.client.get(path, headers=other)
        assert resp.status == 200 and (await resp.json())["attachments"] == [], path
    resp = await service.client.get("/v1/attachments/count?target_type=Task&target_id=1", headers=other)
    assert (await resp.json())["count"] == 0
    by_id = {"filter": [{"field": "id", "op": "eq", "value": a["id"]}]}
    resp = await service.client.post("/v1/attachments/query", json=by_id, headers=other)
    assert (await resp.json())["attachments"] == []
    resp = await service.client.post("/v1/attachments/query/count", json=by_id, headers=other)
    assert (await resp.json())["count"] == 0
    # A's Idempotency-Key is A's alone: B's request with it is B's own upload, not A's answer.
    resp = await service.upload_json(TEXT, headers={**other, "Idempotency-Key": "a-key"})
    assert resp.status == 201 and (await resp.json())["id"] != a["id"]


# --- deadlines on every connection -----------------------------------------------------------------------


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    return await asyncio.wait_for(reader.read(), seconds)


async def test_a_partial_request_head_is_answered_408_and_closed(make_service):
    async with make_service(header_timeout_s=1.0) as svc:
        host, port = svc.client.host, svc.client.port
        conns = [await asyncio.open_connection(host, port) for _ in range(5)]
        for _, writer in conns:
            writer.write(b"GET /v1/attach")
            await writer.drain()
        started = time.monotonic()
        answers = await asyncio.gather(*(_closed_within(reader, 5) for reader, _ in conns))
        assert time.monotonic() - started < 3
        for answer in answers:
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 ") and b"application/json" in head
            assert orjson.loads(body)["error"]["code"] == "request_timeout"
        for _, writer in conns:
            writer.close()


async def test_trickling_a_request_head_does_not_extend_its_deadline(make_service):
    async with make_service(header_timeout_s=1.0) as svc:
        reader, writer = await asyncio.open_connection(svc.client.host, svc.client.port)
        started = time.monotonic()

        async def trickle() -> None:
            for byte in b"GET /v1/attachments HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100:
                writer.write(bytes([byte]))
                await asyncio.sleep(0.1)

        dripping = asyncio.create_task(trickle())
        answer = await _closed_within(reader, 5)
        dripping.cancel()
        assert time.monotonic() - started < 2.5
        assert answer.startswith(b"HTTP/1.1 408 ")
        writer.close()


async def test_a_silent_connection_and_an_idle_keep_alive_one_are_closed(make_service):
    idle_s = 4.0  # 2.5 s more than the pauses below, on a busy machine too
    async with make_service(header_timeout_s=1.0, keepalive_timeout_s=idle_s) as svc:
        reader, writer = await asyncio.open_connection(svc.client.host, svc.client.port)
        assert await _closed_within(reader, 4) == b""  # nothing sent: closed without an answer
        writer.close()

        reader, writer = await asyncio.open_connection(svc.client.host, svc.client.port)
        for _ in range(2):  # a keep-alive connection serves requests while it is in use...
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 5)
            assert line.startswith(b"HTTP/1.1 200 ")
            await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), 5)
            answered = time.monotonic()
            await asyncio.sleep(1.5)  # past the head deadline, within the idle one
        assert await _closed_within(reader, idle_s + 5) == b""  # ...and is closed once idle for keepalive_timeout_s
        assert time.monotonic() - answered < idle_s + 2.2
        writer.close()


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/attachments/query"), ("PATCH", f"/v1/attachments/{ID}"), ("PUT", "/v1/targets/Ticket/1")],
)
async def test_a_json_body_that_stops_arriving_is_answered_408(make_service, method, path):
    async with make_service(body_read_timeout_s=1.0) as svc:
        reader, writer = await asyncio.open_connection(svc.client.host, svc.client.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {svc.token()}\r\n"
        writer.write(f'{head}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"filter"'.encode())
        await writer.drain()
        started = time.monotonic()
        answer = await asyncio.wait_for(reader.readuntil(b"}}"), 5)
        assert time.monotonic() - started < 3
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ") and b"application/json" in head
        assert orjson.loads(body)["error"]["code"] == "request_timeout"
        writer.close()
        await assert_nothing_stored(svc)


# --- a client that leaves mid-upload ---------------------------------------------------------------------


def _count(status: str) -> float:
    return REQUESTS.labels("attachd", "POST", "/v1/attachments", status)._value.get()


@pytest.mark.parametrize("kind", ["raw", "multipart"])
async def test_a_client_that_leaves_mid_upload_is_no_server_error(service, caplog, kind):
    before = {status: _count(status) for status in ("499", "500")}
    if kind == "raw":
        head = (
            "POST /v1/attachments?target_type=Task&target_id=1&filename=a.txt HTTP/1.1\r\nContent-Type: text/plain\r\n"
        )
        sent = b"x" * 200_000
    else:
        head = f"POST /v1/attachments HTTP/1.1\r\nContent-Type: {MP}\r\n"
        sent = (
            target_fields()
            + f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'.encode()
            + b"x" * 200_000
        )
    head += f"Host: x\r\nAuthorization: Bearer {service.token()}\r\nContent-Length: 5000000\r\n\r\n"
    caplog.set_level(logging.INFO)
    _, writer = await asyncio.open_connection(service.client.host, service.client.port)
    writer.write(head.encode() + sent)
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.transport.abort()  # gone, mid-body
    deadline = time.monotonic() + 10
    while _count("499") == before["499"] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert _count("499") == before["499"] + 1
    assert _count("500") == before["500"]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert all(r.exc_info is None for r in caplog.records if r.name.startswith(("attachd", "aiohttp")))
    assert any("client closed the connection" in r.getMessage() for r in caplog.records)
    await assert_nothing_stored(service)
