"""The Python client (attachd_client) against a real attachd: uploads by multipart, tus, base64 and URL,
resuming a tus upload after its connection is cut, reads, downloads, changes, deletes, typed errors; and
the same through the synchronous Client. Its pure rules are called directly first."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import os
from typing import Any

import pytest

from attachd_client import (
    AsyncClient,
    BadRequest,
    Client,
    Forbidden,
    NotFound,
    Target,
    Unauthorized,
    UploadFailed,
    errors,
    retries,
    tus,
)
from attachd_client.client import create_fields, form_value, list_params
from attachd_client.state import ResumeState, upload_key
from attachd_client.streams import AtomicFile
from services.core import tus as server_tus
from services.core.auth import READ
from tests.conftest import Remote, Service, jpeg_bytes

MiB = 1 << 20
TASK = Target("Task", "42")


def base_url(svc: Service) -> str:
    return str(svc.client.make_url("/"))


def client_of(svc: Service, token: str | None = None, **options: Any) -> AsyncClient:
    return AsyncClient(base_url(svc), token or svc.token(), **options)


def text_bytes(size: int) -> bytes:
    """``size`` bytes of random text (attachd takes .txt files that are text)."""
    return base64.b64encode(os.urandom(size))[:size]


async def stored(svc: Service, attachment_id: str) -> bytes:
    row = await svc.pool.fetchrow("SELECT storage_key FROM attachments WHERE id = $1", attachment_id)
    return b"".join([chunk async for chunk in svc.storage.read(row["storage_key"])])


# The pure rules.


def test_the_error_shape_becomes_a_typed_exception_with_its_code_field_and_status():
    error = errors.error_from_response(
        400, b'{"error": {"code": "invalid_value", "message": "limit must be 1 to 500", "field": "limit"}}'
    )
    assert type(error) is BadRequest
    assert (error.code, error.message, error.field, error.status) == (
        "invalid_value",
        "limit must be 1 to 500",
        "limit",
        400,
    )
    # No body (a HEAD), or not attachd's (a proxy's page): the status still decides the class.
    assert type(missing := errors.error_from_response(404, b"")) is NotFound and missing.code == "not_found"
    proxy = errors.error_from_response(502, b"<html>Bad Gateway</html>")
    assert type(proxy) is errors.ServerError and proxy.code == "http_502" and "Bad Gateway" in proxy.message
    assert type(errors.error_from_response(460, b"")) is errors.ChecksumMismatch
    assert type(errors.error_from_response(418, b"")) is errors.AttachdError


def test_targets_are_type_colon_id():
    assert Target.parse("Task:42") == TASK and str(TASK) == "Task:42"
    assert Target.parse("Note:a:b") == Target("Note", "a:b")  # an id may hold a colon
    for bad in ("Task", "Task:", ":42", ""):
        with pytest.raises(ValueError, match="TYPE:ID"):
            Target.parse(bad)


def test_create_fields_and_list_parameters():
    assert create_fields(TASK, "Site visit", {"display_order": 3, "available": False}) == {
        "display_order": 3,
        "available": False,
        "target_type": "Task",
        "target_id": "42",
        "name": "Site visit",
    }
    assert [form_value(v) for v in (True, False, 7, "x")] == ["true", "false", "7", "x"]
    assert list_params(TASK, descendants=True, order_by="-created_at", limit=2, available=None) == {
        "target_type": "Task",
        "target_id": "42",
        "descendants": "true",
        "order_by": "-created_at",
        "limit": "2",
    }
    assert list_params(None, ancestor=Target("Ticket", "9")) == {"ancestor": "Ticket:9"}


def test_tus_metadata_and_checksums_are_what_the_server_reads():
    fields = {"target_type": "Task", "target_id": "42", "name": "Réunion, notes", "filename": "a b.txt"}
    assert server_tus.parse_metadata(tus.encode_metadata(fields)) == fields
    checksum = server_tus.parse_checksum(tus.checksum_header(b"chunk"))
    assert checksum is not None and checksum.digest == hashlib.sha256(b"chunk").digest()
    assert tus.upload_id("http://h/v1/uploads/tus/0190abcd-0000") == "0190abcd-0000"


def test_which_failures_a_tus_upload_retries_from_the_servers_offset():
    retried = [
        errors.ConnectionFailed("connection_failed", "reset"),
        errors.ServerError("http_503", "", status=503),
        errors.ChecksumMismatch("checksum_mismatch", "", status=460),
        errors.Locked("upload_locked", "", status=423),
        errors.Conflict("offset_mismatch", "", status=409),
        errors.AttachdError("request_timeout", "", status=408),
    ]
    final = [
        errors.Conflict("idempotency_key_in_use", "", status=409),
        errors.BadRequest("invalid_value", "", status=400),
        errors.NotFound("not_found", "", status=404),
        errors.TooLarge("size_exceeded", "", status=413),
    ]
    assert all(retries.resumable(e) for e in retried) and not any(retries.resumable(e) for e in final)
    assert [retries.backoff_s(n) for n in (1, 2, 3, 4, 5, 9)] == [0.5, 1, 2, 4, 8, 8]


def test_which_failures_a_create_sends_again_with_its_idempotency_key():
    again = [
        errors.ConnectionFailed("connection_failed", "reset"),
        errors.ServerError("unavailable", "", status=503),
        errors.Conflict("idempotency_key_in_use", "", status=409),
    ]
    final = [
        errors.BadRequest("invalid_value", "", status=400),
        errors.TooLarge("size_exceeded", "", status=413),
        errors.RateLimited("budget_exceeded", "", status=429),
        errors.UploadFailed("empty_file", ""),
    ]
    assert all(retries.repeatable(e) for e in again) and not any(retries.repeatable(e) for e in final)


def test_the_resume_state_remembers_an_upload_per_file_version_and_target(tmp_path):
    file = tmp_path / "a.bin"
    file.write_bytes(b"x")
    key = upload_key("http://h:1/", "Task:42", file, 1, 10)
    assert key == upload_key("http://h:1", "Task:42", file, 1, 10)
    others = {
        upload_key("http://h:1", "Task:43", file, 1, 10),
        upload_key("http://h:1", "Task:42", file, 2, 10),
        upload_key("http://h:1", "Task:42", file, 1, 11),
        upload_key("http://h:2", "Task:42", file, 1, 10),
    }
    assert key not in others and len(others) == 4
    state = ResumeState(tmp_path / "state" / "uploads.json")
    assert state.url(key) is None
    state.uploading(key, "http://h:1/v1/uploads/tus/u1", file)
    assert ResumeState(state.path).url(key) == "http://h:1/v1/uploads/tus/u1"  # read back from the file
    state.uploaded(key, "0190-id", file)
    assert (state.url(key), state.attachment_id(key)) == (None, "0190-id")
    state.forget(key)
    assert state.url(key) is None and os.listdir(state.path.parent) == ["uploads.json"]


def test_an_atomic_file_appears_whole_or_not_at_all(tmp_path):
    dest = tmp_path / "out" / "f.bin"
    with AtomicFile(dest) as file:
        file.write(b"abc")
        assert not dest.exists()
    assert dest.read_bytes() == b"abc" and file.sha256 == hashlib.sha256(b"abc").hexdigest()
    with pytest.raises(RuntimeError), AtomicFile(tmp_path / "out" / "g.bin") as file:
        file.write(b"half")
        raise RuntimeError("the download broke")
    assert sorted(os.listdir(tmp_path / "out")) == ["f.bin"]


# Uploads.


async def test_a_small_file_goes_in_one_multipart_request(service, tmp_path):
    data = jpeg_bytes()
    path = tmp_path / "site.jpg"
    path.write_bytes(data)
    sent: list[int] = []
    async with client_of(service) as attachd:
        record = await attachd.upload(
            path, TASK, name="Site visit", fields={"display_order": 3, "available": False}, progress=sent.append
        )
    assert (record.name, record.filename, record.content_type) == ("Site visit", "site.jpg", "image/jpeg")
    assert (record.size, record.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert (record.target_type, record.target_id, record.display_order, record.available) == ("Task", "42", 3, False)
    assert record.file is not None and record.file.thumbnail is not None
    assert sent[-1] == len(data) and sent == sorted(sent)
    assert await stored(service, record.id) == data
    assert await service.pool.fetchval("SELECT count(*) FROM attachments WHERE account_id = $1", service.account) == 1


async def test_a_large_file_goes_over_tus_in_checksummed_chunks(service, tmp_path):
    data = text_bytes(3 * MiB + 123)
    path = tmp_path / "big.txt"
    path.write_bytes(data)
    created: list[str] = []
    sent: list[int] = []
    async with client_of(service, tus_threshold=1 * MiB, chunk_size=1 * MiB) as attachd:
        record = await attachd.upload(path, TASK, progress=sent.append, on_resumable=created.append)
    assert len(created) == 1 and tus.upload_id(created[0]) == record.id  # the upload's id is the attachment's
    assert created[0].startswith(base_url(service).rstrip("/") + "/v1/uploads/tus/")
    assert (record.filename, record.size) == ("big.txt", len(data))
    assert record.sha256 == hashlib.sha256(data).hexdigest() and await stored(service, record.id) == data
    assert sent[0] == 0 and sent[-1] == len(data) and sent == sorted(sent)


async def test_a_tus_upload_begun_earlier_is_resumed_from_the_servers_offset(service, tmp_path):
    data = text_bytes(2 * MiB)
    path = tmp_path / "half.txt"
    path.write_bytes(data)
    async with client_of(service, tus_threshold=MiB, chunk_size=MiB) as attachd:
        tus_client = attachd.resumable
        url = await tus_client.create(len(data), {"target_type": "Task", "target_id": "42", "filename": "half.txt"})
        assert await tus_client.send(url, 0, data[:MiB]) == MiB
        sent: list[int] = []
        record = await attachd.upload(path, TASK, resume_url=url, progress=sent.append)
    assert sent[0] == MiB and sent[-1] == 2 * MiB  # only the second half was sent again
    assert record.id == tus.upload_id(url) and await stored(service, record.id) == data


async def test_a_remembered_upload_attachd_no_longer_has_starts_over(service, tmp_path):
    path = tmp_path / "again.txt"
    path.write_bytes(data := text_bytes(MiB + 1))
    async with client_of(service, tus_threshold=MiB) as attachd:
        url = await attachd.resumable.create(len(data), {"target_type": "Task", "target_id": "42"})
        await attachd.terminate_upload(url)
        created: list[str] = []
        record = await attachd.upload(path, TASK, resume_url=url, on_resumable=created.append)
    assert len(created) == 1 and created[0] != url and record.id == tus.upload_id(created[0])
    assert await stored(service, record.id) == data


async def cutting_proxy(target_port: int, cut_after: int) -> tuple[asyncio.Server, list[int]]:
    """A TCP proxy to 127.0.0.1:``target_port`` whose first connection is closed once it has passed
    ``cut_after`` bytes from the client on: a connection that breaks in the middle of a request. The
    list counts the connections."""
    connections: list[int] = []

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, limit: int | None) -> None:
        passed = 0
        try:
            while data := await src.read(64 * 1024):
                if limit is not None and passed + len(data) > limit:
                    dst.write(data[: limit - passed])
                    await dst.drain()
                    return
                dst.write(data)
                await dst.drain()
                passed += len(data)
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
        limit = cut_after if len(connections) == 1 else None
        upward = asyncio.create_task(pipe(reader, upstream_writer, limit))
        downward = asyncio.create_task(pipe(upstream_reader, writer, None))
        await asyncio.wait([upward, downward], return_when=asyncio.FIRST_COMPLETED)
        writer.close()
        upstream_writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), connections


async def test_a_connection_cut_mid_chunk_is_resumed_from_the_servers_offset(service, tmp_path):
    data = text_bytes(3 * MiB)
    path = tmp_path / "cut.txt"
    path.write_bytes(data)
    proxy, connections = await cutting_proxy(service.client.port, cut_after=MiB + MiB // 2)  # in the 2nd chunk
    port = proxy.sockets[0].getsockname()[1]
    sent: list[int] = []
    try:
        async with AsyncClient(
            f"http://127.0.0.1:{port}", service.token(), tus_threshold=MiB, chunk_size=MiB
        ) as attachd:
            record = await attachd.upload(path, TASK, progress=sent.append)
    finally:
        proxy.close()
    assert len(connections) >= 2  # the first was cut, the rest went through another
    fell_back = [(before, after) for before, after in itertools.pairwise(sent) if after < before]
    assert fell_back and fell_back[0][1] == MiB  # the cut chunk was dropped: sent again from the 1 MiB mark
    assert record.sha256 == hashlib.sha256(data).hexdigest() and await stored(service, record.id) == data
    rows = await service.rows()
    assert [str(r["id"]) for r in rows] == [record.id]


async def test_a_multipart_upload_cut_mid_body_is_sent_again_and_kept_once(service, tmp_path):
    data = text_bytes(2 * MiB)
    path = tmp_path / "log.txt"
    path.write_bytes(data)
    proxy, connections = await cutting_proxy(service.client.port, cut_after=MiB)
    port = proxy.sockets[0].getsockname()[1]
    sent: list[int] = []
    try:
        async with AsyncClient(f"http://127.0.0.1:{port}", service.token()) as attachd:
            record = await attachd.upload(path, TASK, progress=sent.append)
    finally:
        proxy.close()
    assert len(connections) >= 2 and sent[-1] == len(data)
    assert any(after < before for before, after in itertools.pairwise(sent))  # it started over
    rows = await service.rows()
    assert [str(r["id"]) for r in rows] == [record.id] and await stored(service, record.id) == data


async def test_uploads_by_base64_and_by_url(service, remote: Remote):
    data = jpeg_bytes(320, 200)
    url = remote.add("/photo.jpg", data, "image/jpeg")
    async with client_of(service) as attachd:
        inline = await attachd.upload_base64(b"hello", TASK, filename="hello.txt", name="Greeting")
        fetched = await attachd.upload_url(url, TASK, name="Fetched")
        link = await attachd.upload_url("https://example.com/spec", TASK, attachment_type="URL")
    assert (inline.name, inline.filename, inline.size) == ("Greeting", "hello.txt", 5)
    assert await stored(service, inline.id) == b"hello"
    assert (fetched.name, fetched.size, fetched.width, fetched.height) == ("Fetched", len(data), 320, 200)
    assert remote.hits == ["/photo.jpg"]
    assert (link.attachment_type, link.url, link.size) == ("URL", "https://example.com/spec", None)


async def test_a_write_refused_by_its_job_is_raised_with_the_jobs_code(service, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    async with client_of(service) as attachd:
        with pytest.raises(BadRequest) as multipart:
            await attachd.upload(empty, TASK)
    async with client_of(service, tus_threshold=-1) as attachd:  # even an empty file over tus
        with pytest.raises(UploadFailed) as resumable:
            await attachd.upload(empty, TASK)
    assert (multipart.value.code, multipart.value.field, multipart.value.status) == ("empty_file", "file", 400)
    assert resumable.value.code == "empty_file" and resumable.value.status is None
    assert await service.rows() == []


# Reads, downloads, changes, deletes.


async def make_five(attachd: AsyncClient) -> list[str]:
    ids = []
    for n in range(5):
        record = await attachd.upload_base64(
            f"file {n}".encode(), TASK, filename=f"f{n}.txt", name=f"invoice {n}" if n % 2 else f"memo {n}"
        )
        ids.append(record.id)
    return ids


async def test_list_iterates_every_page_and_count_and_query_agree(service):
    async with client_of(service) as attachd:
        ids = await make_five(attachd)
        await attachd.upload_base64(b"elsewhere", Target("Task", "43"), filename="x.txt")
        listed = [a.id async for a in attachd.list(TASK, order_by="created_at", page_size=2)]
        first = await attachd.list_page(TASK, limit=2, order_by="created_at")
        count = await attachd.count(TASK)
        invoices = [
            a
            async for a in attachd.query(
                [{"field": "name", "op": "beginsWith", "value": "invoice"}],
                include_fields=["name"],
                page_size=1,
            )
        ]
        invoice_count = await attachd.query_count([{"field": "name", "op": "beginsWith", "value": "invoice"}])
    assert listed == ids and [a.id for a in first.attachments] == ids[:2] and first.next_cursor
    assert count == 5
    assert sorted(a.name for a in invoices) == ["invoice 1", "invoice 3"] and invoice_count == 2
    assert all(a.size is None for a in invoices)  # only the fields asked for


async def test_get_by_id_or_integer_id_download_change_delete(service, tmp_path):
    data = jpeg_bytes(400, 300)
    path = tmp_path / "p.jpg"
    path.write_bytes(data)
    async with client_of(service) as attachd:
        record = await attachd.upload(path, TASK)
        assert record.seq is not None
        assert (await attachd.get(record.id)).id == (await attachd.get(record.seq)).id == record.id

        saved = await attachd.download(record.id, tmp_path / "out" / "copy.jpg")
        thumb = await attachd.download(record.seq, tmp_path / "out" / "thumb.jpg", variant="thumbnail")
        streamed = b"".join([chunk async for chunk in attachd.iter_file(record.id)])
        assert saved.read_bytes() == streamed == data and thumb.read_bytes()[:2] == b"\xff\xd8"
        assert sorted(os.listdir(tmp_path / "out")) == ["copy.jpg", "thumb.jpg"]  # no temporary file left

        changed = await attachd.change(record.id, name="Front door", display_order=7)
        assert (changed.name, changed.display_order) == ("Front door", 7)
        row = await service.pool.fetchrow("SELECT name, display_order FROM attachments WHERE id = $1", record.id)
        assert (row["name"], row["display_order"]) == ("Front door", 7)

        await attachd.delete(record.id)
        with pytest.raises(NotFound) as gone:
            await attachd.get(record.id)
        with pytest.raises(NotFound):
            await attachd.download(record.id, tmp_path / "out" / "deleted.jpg")
        assert (await attachd.get(record.id, include_canceled=True)).canceled_at is not None
    assert (gone.value.code, gone.value.status) == ("not_found", 404)
    assert sorted(os.listdir(tmp_path / "out")) == ["copy.jpg", "thumb.jpg"]


async def test_refusals_are_typed_with_their_code_and_field(service):
    async with client_of(service) as attachd:
        with pytest.raises(BadRequest) as bad_limit:
            await attachd.list_page(TASK, limit=100_000)
        record = await attachd.upload_base64(b"x", TASK, filename="x.txt")
        with pytest.raises(BadRequest) as bad_change:
            await attachd.change(record.id, status="bogus")
        with pytest.raises(BadRequest) as bad_query:
            [a async for a in attachd.query([{"field": "nope", "op": "eq", "value": 1}])]
        with pytest.raises(NotFound):
            await attachd.get("00000000-0000-0000-0000-000000000000")
    async with client_of(service, token="not-a-token") as attachd:
        with pytest.raises(Unauthorized) as unauthorized:
            await attachd.count(TASK)
    async with client_of(service, token=service.token(scope=READ)) as attachd:
        with pytest.raises(Forbidden) as forbidden:
            await attachd.upload_base64(b"x", TASK, filename="x.txt")
    assert (bad_limit.value.field, bad_limit.value.status) == ("limit", 400)
    assert bad_change.value.field == "status"
    assert bad_query.value.field == "filter[0].field"
    assert unauthorized.value.status == 401 and forbidden.value.code == "insufficient_scope"


async def test_the_sync_client_makes_the_same_calls_from_plain_code(service, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"meeting notes")

    def work() -> tuple[Any, ...]:
        with Client(base_url(service), service.token()) as attachd:
            record = attachd.upload(path, TASK, name="Notes")
            listed = [a.id for a in attachd.list(TASK)]
            count = attachd.count(TASK)
            saved = attachd.download(record.id, tmp_path / "back.txt").read_bytes()
            renamed = attachd.change(record.id, name="Minutes").name
            attachd.delete(record.id)
            try:
                attachd.get(record.id)
            except NotFound as exc:
                missing = exc.code
            return record, listed, count, saved, renamed, missing

    record, listed, count, saved, renamed, missing = await asyncio.to_thread(work)
    assert record.name == "Notes" and listed == [record.id] and count == 1
    assert (saved, renamed, missing) == (b"meeting notes", "Minutes", "not_found")
