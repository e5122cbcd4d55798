"""The ingest job: turn sources (staged bytes, base64, a URL, a bare link) into committed attachments.

For each item: fetch or decode into a private temp file, sniff, validate,
hash and thumbnail off the event loop, then move the bytes to their final
keys. Only then are the rows and their outbox events committed, in one
transaction. ``mode`` decides what one bad item does: ``atomic`` commits
nothing, ``partial`` commits the rest and reports it. The job id is the
upload id; rows are keyed by their own ids, so a re-run finds them and makes
nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import mimetypes
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any

from services.core import encoding, hierarchy, jobs, repository, storage
from services.core.errors import ApiError
from services.core.filenames import extension_of, sanitize_filename
from services.core.records import row_to_dict
from services.core.repository import targets
from services.core.sniff import check_content, sniff
from services.core.validation import (
    NESTED_TARGET_TYPE,
    NewAttachment,
    check_creator_may_publish,
    parse_new_attachment,
)
from workers import metrics
from workers.context import WorkerContext
from workers.fetch import fetch_to_file
from workers.media import SMALL, THUMBNAIL, MediaResult, make_variants
from workers.outcomes import always_answers

# Source kinds whose bytes travel outside the item's fields, and the field their errors name.
BYTE_SOURCES = {"staged": "file", "base64": "data", "rejected": "file"}
# Preferred extension for a sniffed type, for bytes that arrive with no file name.
TYPE_EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/heif": "heic",
    "image/avif": "avif",
    "image/tiff": "tiff",
    "image/bmp": "bmp",
    "application/pdf": "pdf",
    "text/plain": "txt",
    "application/zip": "zip",
    "application/gzip": "gz",
    "audio/mpeg": "mp3",
    "video/mp4": "mp4",
    "audio/wav": "wav",
}


@dataclass
class Prepared:
    """An item that passed every check, with its bytes at their final keys."""

    values: dict[str, Any]
    stored_keys: list[str]
    new: NewAttachment
    placement: str | None = None  # "version" or "nested" when parent_attachment_id is given


def _digest_file(path: str) -> tuple[str, bytes, int]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        head = f.read(4096)
        h.update(head)
        while chunk := f.read(1 << 20):
            h.update(chunk)
        size = f.tell()
    return sniff(head), h.digest(), size


def _file_name(new: NewAttachment, hint: str | None, sniffed: str, attachment_id: str) -> str:
    for candidate in (new.filename, hint, new.name):
        if candidate and extension_of(candidate):
            return sanitize_filename(candidate)
    stem = sanitize_filename(new.filename or hint or new.name or attachment_id)
    ext = TYPE_EXTENSIONS.get(sniffed)
    return f"{stem}.{ext}" if ext else stem


def _content_type(sniffed: str, filename: str) -> str:
    # The sniffed type already agrees with the extension's family; the extension names the member
    # (a .docx sniffs as zip, a .csv as text).
    if sniffed.startswith("image/"):
        return sniffed
    return mimetypes.guess_type(filename, strict=False)[0] or sniffed


class IngestJob:
    def __init__(self, ctx: WorkerContext, job: dict[str, Any]) -> None:
        self.ctx = ctx
        self.job = job
        self.job_id: str = job["job_id"]
        self.account_id: str = job["account_id"]
        self.actor: dict[str, Any] = job.get("actor") or {}
        self.mode: str = job.get("mode", "atomic")
        self.items: list[dict[str, Any]] = job["items"]
        self.many: bool = job.get("many", len(self.items) > 1)
        # The ingress puts the account's own limit in the job; jobs from elsewhere get the default.
        self.max_file_bytes: int = job.get("max_file_bytes") or ctx.settings.max_file_bytes
        self.committed_at: float | None = None  # perf_counter() once the rows are committed

    async def run(self) -> dict[str, Any]:
        settings = self.ctx.settings
        sem = asyncio.Semaphore(settings.worker_concurrency)

        async def guarded(index: int, item: dict[str, Any]) -> Prepared | ApiError:
            async with sem:
                try:
                    return await self.prepare(item)
                except ApiError as exc:
                    return exc

        results = await asyncio.gather(*(guarded(i, item) for i, item in enumerate(self.items)))
        errors = [self._item_error(i, r) for i, r in enumerate(results) if isinstance(r, ApiError)]
        good = [r for r in results if isinstance(r, Prepared)]
        if errors and (self.mode == "atomic" or not good):
            await self._discard(good)
            return self._failed(errors)
        try:
            with metrics.timed("commit"):
                rows = await self.commit(good)
        except ApiError as exc:  # the parent changed under us between checking and committing
            await self._discard(good)
            return self._failed([{"index": 0, **exc.to_dict()}])
        except BaseException:
            await self._discard(good)
            raise
        self.committed_at = time.perf_counter()
        await self.ctx.storage.delete_prefix(storage.staging_prefix(self.job_id))
        outcome: dict[str, Any] = {
            "state": "complete",
            "attachments": [row_to_dict(r) for r in rows],
            "errors": errors,
            "many": self.many,
        }
        if self.many:
            outcome["files_q"] = await self._files_q(rows)
        return outcome

    def _item_error(self, index: int, error: ApiError) -> dict[str, Any]:
        fields = self.items[index].get("fields", {})
        return {"index": index, "filename": fields.get("filename") or fields.get("name"), **error.to_dict()}

    def _failed(self, errors: list[dict[str, Any]]) -> dict[str, Any]:
        if not self.many:
            error = dict(errors[0])
            error.pop("index", None)
            error.pop("filename", None)
            return {"state": "failed", "error": error}
        first_status = errors[0]["status"]
        status = first_status if all(e["status"] == first_status for e in errors) else 400
        message = (
            f"{len(errors)} of {len(self.items)} files were refused; nothing was stored"
            if self.mode == "atomic"
            else "every file was refused"
        )
        return {
            "state": "failed",
            "error": {"code": "upload_refused", "message": message, "status": status},
            "errors": errors,
            "many": True,
        }

    async def _discard(self, prepared: list[Prepared]) -> None:
        keys = [k for p in prepared for k in p.stored_keys]
        with contextlib.suppress(Exception):
            await self.ctx.storage.delete(*keys)
            await self.ctx.storage.delete_prefix(storage.staging_prefix(self.job_id))

    async def _files_q(self, rows) -> int | None:
        target = next(((r["target_type"], r["target_id"]) for r in rows if r["target_id"] is not None), None)
        if target is None:
            first = self.items[0].get("fields", {})
            if first.get("target_type") is None:
                return None
            target = (first["target_type"], str(first["target_id"]))
        async with self.ctx.pool.acquire() as conn:
            return await repository.count_live_on_target(conn, self.account_id, *target)

    async def prepare(self, item: dict[str, Any]) -> Prepared:
        settings = self.ctx.settings
        source = item["source"]
        if source["kind"] == "rejected":  # refused while streaming; reported here so `mode` applies
            raise ApiError.from_dict(source["error"])
        new = parse_new_attachment(
            item.get("fields", {}), has_file=source["kind"] in BYTE_SOURCES, filename_hint=source.get("filename")
        )
        check_creator_may_publish(self.actor.get("type", "User"), new.publish)
        bytes_field = BYTE_SOURCES.get(source["kind"], "url")
        attachment_id = str(uuid.UUID(item["id"]))
        if new.declared_size is not None and new.declared_size > self.max_file_bytes:
            raise _too_large(self.max_file_bytes, "size")
        values = self._base_values(attachment_id, new)
        placement = await self._placement(new, values)
        if new.source == "link":
            values["name"] = new.name or new.url
            return Prepared(values, [], new, placement)

        # Bytes staged in a local directory are read where they lie; anything else lands in a temp file.
        local = self.ctx.storage.local_path(source["key"]) if source["kind"] == "staged" else None
        path = local or self._temp_path()
        try:
            hint = source.get("filename")
            with metrics.timed("fetch"):
                if local is None:
                    hint = await self._materialize(source, new, path) or hint
            with metrics.timed("validate"):
                sniffed, digest, size = await asyncio.to_thread(_digest_file, path)
                if size > self.max_file_bytes:
                    raise _too_large(self.max_file_bytes, bytes_field)
                if size == 0:
                    raise ApiError("empty_file", "the file is empty", field=bytes_field, status=400)
                filename = _file_name(new, hint, sniffed, attachment_id)
                check_content(extension_of(filename), sniffed, allowed=settings.allowed_extensions)
            media = await self._thumbnail(path, sniffed)
            with metrics.timed("storage"):
                keys = await self._store(source, path, attachment_id, media)
        finally:
            if path != local:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

        values.update(
            name=new.name or filename,
            filename=filename,
            content_type=_content_type(sniffed, filename),
            size=size,
            sha256=digest,
            storage_key=keys[0],
            width=media.width,
            height=media.height,
            variants={
                "thumbnail": {
                    "key": keys[1],
                    "size": len(media.thumbnail),
                    "width": THUMBNAIL[0],
                    "height": THUMBNAIL[1],
                },
                "small": {"key": keys[2], "size": len(media.small), "width": SMALL[0], "height": SMALL[1]},
            }
            if media.thumbnail
            else None,
        )
        return Prepared(values, keys, new, placement)

    async def _thumbnail(self, path: str, sniffed: str) -> MediaResult:
        max_pixels = self.ctx.settings.max_image_pixels
        submitted = time.perf_counter()

        def run() -> MediaResult:
            metrics.observe("media_wait", time.perf_counter() - submitted)
            with metrics.timed("thumbnail"):
                return make_variants(path, sniffed, max_pixels=max_pixels)

        return await asyncio.get_running_loop().run_in_executor(self.ctx.media_executor, run)

    def _temp_path(self) -> str:
        fd, path = tempfile.mkstemp(dir=self.ctx.tmp_dir, prefix="ingest-")
        os.close(fd)
        return path

    async def _materialize(self, source: dict[str, Any], new: NewAttachment, path: str) -> str | None:
        """Write the item's bytes to ``path``; returns a file name the source suggested, if any."""
        settings = self.ctx.settings
        kind = source["kind"]
        if kind == "staged":
            await self.ctx.storage.download_to(source["key"], path)
            return None
        if kind == "base64":
            text = source.get("data")
            if text is None:
                text = (await self.ctx.storage.get_bytes(source["key"])).decode("ascii", "replace")
            data = encoding.parse_data(text)
            encoding.check_size(data.base64, self.max_file_bytes)
            with open(path, "wb") as f:
                await asyncio.to_thread(encoding.decode_to, data.base64, f.write)
            return None
        if kind == "url":
            with open(path, "wb") as f:
                result = await fetch_to_file(
                    new.url,
                    f,
                    max_bytes=self.max_file_bytes,
                    allow_cidrs=settings.fetch_allow_cidrs,
                    connect_timeout=settings.fetch_connect_timeout_s,
                    total_timeout=settings.fetch_total_timeout_s,
                )
            return result.filename
        raise ApiError("invalid_source", f"unknown source kind {kind!r}", field="source")

    async def _store(self, source: dict[str, Any], path: str, attachment_id: str, media: MediaResult) -> list[str]:
        st = self.ctx.storage
        original = storage.object_key(self.account_id, attachment_id, "original")
        keys = [original]
        if source["kind"] == "staged":
            # Copy, not move: a retried job must still find its staged bytes.
            await st.copy(source["key"], original)
        else:
            await st.put_file(original, path)
        if media.thumbnail is not None:
            thumb = storage.object_key(self.account_id, attachment_id, "thumbnail")
            small = storage.object_key(self.account_id, attachment_id, "small")
            await asyncio.gather(st.put_bytes(thumb, media.thumbnail), st.put_bytes(small, media.small))
            keys += [thumb, small]
        return keys

    def _base_values(self, attachment_id: str, new: NewAttachment) -> dict[str, Any]:
        return {
            "id": uuid.UUID(attachment_id),
            "account_id": self.account_id,
            "target_type": new.target_type,
            "target_id": new.target_id,
            "field": new.field,
            "parent_type": new.parent_type,
            "parent_attachment_id": new.parent_attachment_id and uuid.UUID(new.parent_attachment_id),
            "version": 1,
            "version_root": None,
            "ancestors": [],
            "attachment_type": new.attachment_type,
            "name": new.name,
            "filename": None,
            "content_type": None,
            "size": None,
            "sha256": None,
            "storage_key": None,
            "url": new.url,
            "width": None,
            "height": None,
            "variants": None,
            "display_order": new.display_order,
            "available": new.available,
            "status": new.status,
            "created_from": new.created_from,
            "publish": new.publish,
            "session_token": new.session_token,
            "created_by_type": self.actor.get("type", "User"),
            "created_by_id": self.actor.get("id"),
            "impersonator_id": new.impersonator_id,
        }

    async def _placement(self, new: NewAttachment, values: dict[str, Any]) -> str | None:
        """Check ``parent_attachment_id`` before any bytes move: a version on the parent's target, or an
        attachment nested under it (with no target of its own); nothing else."""
        if new.parent_attachment_id is None:
            return None
        async with self.ctx.pool.acquire() as conn:
            parent = await repository.get_attachment(conn, self.account_id, uuid.UUID(new.parent_attachment_id))
        field = "parent_attachment_id"
        if parent is None:
            raise ApiError("invalid_parent", "parent_attachment_id names no attachment of this account", field=field)
        if new.target_type in (None, NESTED_TARGET_TYPE):
            if new.target_id not in (None, str(parent["id"])):
                raise ApiError("invalid_parent", "a nested attachment's target is its parent", field="target_id")
            if parent["target_type"] in self.ctx.settings.no_nesting_types:
                raise ApiError(
                    "nesting_not_allowed",
                    f"attachments of a {parent['target_type']} cannot have nested attachments",
                    field=field,
                )
            values.update(target_type=NESTED_TARGET_TYPE, target_id=str(parent["id"]))
            return "nested"
        if (new.target_type, new.target_id) != (parent["target_type"], parent["target_id"]):
            raise ApiError(
                "invalid_parent",
                "a new version goes on its parent's target; to nest an "
                "attachment under another, leave target_type and target_id out",
                field=field,
            )
        return "version"

    async def commit(self, prepared: list[Prepared]):
        async with self.ctx.pool.acquire() as conn, conn.transaction():
            moves = any(p.new.parent is not None for p in prepared)
            await targets.lock_hierarchy(conn, self.account_id, shared=not moves)
            rows, announce, moves = [], [], []
            for p in prepared:
                if (moved := await self._place(conn, p)) is not None:
                    moves.append(moved)
                token = p.values["session_token"]
                row, inserted = await repository.insert_attachment(conn, p.values, self.job_id, emit_event=False)
                if token is not None:
                    await repository.touch_upload_session(conn, self.account_id, token)
                elif inserted:  # a session's uploads are announced together, when the session closes
                    announce.append(row)
                rows.append(row)
            # Events last: see repository.write_event.
            for moved in moves:
                await repository.write_event(conn, self.account_id, "target.moved", None, self.job_id, moved)
            for row in announce:
                await repository.announce_created(conn, row, self.job_id)
            return rows

    async def _place(self, conn, p: Prepared) -> dict | None:
        """Fill in the row's ancestors and, for a new version, its number; inside the commit.
        Returns the ``target.moved`` payload when an inline parent moved the target."""
        values, new, moved = p.values, p.new, None
        if p.placement == "nested":
            parent_chain = await targets.attachment_ancestors(conn, values["parent_attachment_id"])
            values["ancestors"] = [hierarchy.node(NESTED_TARGET_TYPE, values["target_id"]), *parent_chain]
        elif new.parent is not None:
            values["ancestors"], moved = await targets.place_target(
                conn, self.account_id, new.target_type, new.target_id, new.parent
            )
        elif new.target_type is not None:
            values["ancestors"] = await targets.chain_of(conn, self.account_id, new.target_type, new.target_id)
        if p.placement == "version":
            values["version"], values["version_root"] = await repository.next_version(
                conn, self.account_id, values["parent_attachment_id"], values["id"]
            )
        return moved


def _too_large(limit: int, field: str) -> ApiError:
    return ApiError("size_exceeded", f"the file is larger than the limit of {limit} bytes", field=field, status=413)


@always_answers
async def ingest(ctx: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """arq entry point; the outcome goes to Redis for the waiting ingress, the return value to arq."""
    wctx: WorkerContext = ctx["attachd"]
    job_id = job["job_id"]
    if (done := await jobs.read_outcome(ctx["redis"], job_id)) is not None:
        # Already finished (arq may run a job again): its staged bytes are gone, its outcome stands.
        return {"state": done["state"]}
    if ctx.get("job_try", 1) == 1:
        metrics.observe_queue_wait(ctx.get("enqueue_time"))
    ingest_job = IngestJob(wctx, job)
    outcome = await ingest_job.run()
    await jobs.publish_outcome(ctx["redis"], job_id, outcome)
    if ingest_job.committed_at is not None:
        metrics.observe("finish", time.perf_counter() - ingest_job.committed_at)
    return {"state": outcome["state"]}
