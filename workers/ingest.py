"""The ingest job: turn sources (staged bytes, base64, a URL, a bare link) into committed attachments.

For each item: fetch or decode into a private temp file, sniff, validate,
hash and thumbnail off the event loop, then copy the bytes to their final
keys. Only then are the rows and their outbox events committed, in one
transaction. ``mode`` decides what one bad item does: ``atomic`` commits
nothing, ``partial`` commits the rest and reports it. The job id is the
upload id; rows are keyed by their own ids, so a re-run finds them and makes
nothing twice.

Bytes are deleted only once it is known that no row needs them: the staged
input after the outcome is published (``finish``), an item's final objects
only when its refusal is certain or, giving up, after the database says it
has no row.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from services.core import encoding, hierarchy, logs, repository, storage
from services.core.contract import (
    AnyOutcome,
    Base64Source,
    Failed,
    Ingested,
    IngestItem,
    IngestJob,
    ItemError,
    LinkSource,
    NewAttachment,
    RejectedSource,
    Source,
    StagedSource,
    UrlSource,
    attachment_row,
)
from services.core.errors import ApiError
from services.core.fields import FIELDS
from services.core.filenames import extension_of, sanitize_filename
from services.core.mediatypes import TYPE_EXTENSIONS, stored_content_type
from services.core.repository import targets
from services.core.sniff import check_content, sniff
from services.core.validation import NESTED_TARGET_TYPE, check_nesting, check_new_attachment
from workers import metrics
from workers.context import WorkerContext
from workers.fetch import fetch_to_file
from workers.media import SMALL, THUMBNAIL, MediaResult, make_variants
from workers.runner import INTERNAL_ERROR, Attempt, JobSpec

VARIANT_NAMES = ("original", "thumbnail", "small")
# The create fields stored as they were given, in the columns of the same name; a file's name and type
# are what the worker finds, not what the request declared.
_STORED_CREATE_FIELDS = tuple(
    f.name
    for f in msgspec.structs.fields(NewAttachment)
    if f.name in repository.INSERT_COLUMNS and f.name not in ("filename", "content_type")
)


@dataclass
class Prepared:
    """An item that passed every check, with its bytes at their final keys."""

    values: dict[str, Any]
    stored_keys: list[str]
    item: IngestItem
    placement: str | None = None  # "version" (version_of given) or "nested" (parent_attachment_id given)


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


def _bytes_field(source: Source) -> str:
    """The request field a problem with the item's bytes is blamed on."""
    if isinstance(source, Base64Source):
        return "data"
    return "url" if isinstance(source, UrlSource) else "file"


class IngestRun:
    """One run of an ingest job."""

    def __init__(self, ctx: WorkerContext, job: IngestJob) -> None:
        self.ctx = ctx
        self.job = job
        self.job_id = job.job_id
        self.account_id = job.account_id
        # The ingress puts the account's own limit in the job; jobs from elsewhere get the default.
        self.max_file_bytes: int = job.max_file_bytes or ctx.settings.max_file_bytes

    async def run(self, attempt: Attempt) -> AnyOutcome:
        if attempt.is_retry and (rows := await self.committed_rows()):
            return await self.ingested(rows, [])  # an earlier run committed, then died before it answered
        sem = asyncio.Semaphore(self.ctx.settings.worker_concurrency)

        async def guarded(item: IngestItem) -> Prepared | ApiError:
            async with sem:
                try:
                    return await self.prepare(item)
                except ApiError as exc:
                    return exc

        results = await asyncio.gather(*(guarded(item) for item in self.job.items))
        errors = [self._item_error(i, r) for i, r in enumerate(results) if isinstance(r, ApiError)]
        good = [r for r in results if isinstance(r, Prepared)]
        if errors and (self.job.mode == "atomic" or not good):
            await self._discard(good)  # refused for certain: nothing of this job is committed
            return self._failed(errors)
        try:
            with metrics.timed("commit"):
                records = await self.commit(good)
        except ApiError as exc:  # the parent changed under us between checking and committing
            await self._discard(good)
            return self._failed([self._item_error(0, exc)])
        # Any other error leaves every byte where it is: the commit may have happened. Once it has, the rows
        # are the record of the upload: the staged input can go before the answer (a re-run finds the rows).
        await self.ctx.storage.delete_prefix(storage.staging_prefix(self.job_id))
        return await self.ingested(records, errors)

    async def committed_rows(self) -> list[asyncpg.Record]:
        async with self.ctx.pool.acquire() as conn:
            return await repository.get_attachments(conn, self.account_id, [item.id for item in self.job.items])

    async def ingested(self, records: list[asyncpg.Record], errors: list[ItemError]) -> Ingested:
        many = self.job.answers_many
        return Ingested(
            attachments=[attachment_row(r) for r in records],
            errors=errors,
            many=many,
            files_q=await self._files_q(records) if many else None,
        )

    async def give_up(self) -> AnyOutcome:
        """Every run failed: the answer is what the database holds, and only rowless bytes go."""
        if rows := await self.committed_rows():
            return await self.ingested(rows, [])
        uncommitted = [
            storage.object_key(self.account_id, str(item.id), variant)
            for item in self.job.items
            for variant in VARIANT_NAMES
        ]
        await self.ctx.storage.delete(*uncommitted)
        return Failed(error=INTERNAL_ERROR, many=self.job.answers_many)

    def _item_error(self, index: int, error: ApiError) -> ItemError:
        fields = self.job.items[index].fields
        info = error.to_info()
        return ItemError(
            index=index,
            filename=fields.filename or fields.name,
            code=info.code,
            message=info.message,
            status=info.status,
            field=info.field,
            extra=info.extra,
        )

    def _failed(self, errors: list[ItemError]) -> Failed:
        if not self.job.answers_many:
            first = errors[0]
            return Failed(error=ApiError.from_info(first).to_info())
        first_status = errors[0].status
        status = first_status if all(e.status == first_status for e in errors) else 400
        message = (
            f"{len(errors)} of {len(self.job.items)} files were refused; nothing was stored"
            if self.job.mode == "atomic"
            else "every file was refused"
        )
        return Failed(error=ApiError("upload_refused", message, status=status).to_info(), errors=errors, many=True)

    async def _discard(self, prepared: list[Prepared]) -> None:
        keys = [k for p in prepared for k in p.stored_keys]
        with contextlib.suppress(Exception):
            await self.ctx.storage.delete(*keys)

    async def _files_q(self, rows: list[asyncpg.Record]) -> int | None:
        target = next(((r["target_type"], r["target_id"]) for r in rows if r["target_id"] is not None), None)
        if target is None:
            first = self.job.items[0].fields
            if first.target_type is None or first.target_id is None:
                return None
            target = (first.target_type, first.target_id)
        async with self.ctx.pool.acquire() as conn:
            return await repository.count_live_on_target(conn, self.account_id, *target)

    async def prepare(self, item: IngestItem) -> Prepared:
        settings = self.ctx.settings
        source, new = item.source, item.fields
        if isinstance(source, RejectedSource):  # refused while streaming; reported here so `mode` applies
            raise ApiError.from_info(source.error)
        check_new_attachment(new, source, self.job.actor.type)
        attachment_id = str(item.id)
        logs.bind(attachment_id=attachment_id)  # this item's own task (gather): its lines only
        if new.declared_size is not None and new.declared_size > self.max_file_bytes:
            raise _too_large(self.max_file_bytes, "size")
        values = self._base_values(attachment_id, new)
        placement = await self._placement(new, values)
        if isinstance(source, LinkSource):
            values["name"] = _link_name(new)
            return Prepared(values, [], item, placement)

        # Bytes staged in a local directory are read where they lie; anything else lands in a temp file.
        local = self.ctx.storage.local_path(source.key) if isinstance(source, StagedSource) else None
        path = local or self._temp_path()
        try:
            hint = source.filename if isinstance(source, StagedSource) else None
            with metrics.timed("fetch"):
                if local is None:
                    hint = await self._materialize(source, new, path) or hint
            with metrics.timed("validate"):
                sniffed, digest, size = await asyncio.to_thread(_digest_file, path)
                if size > self.max_file_bytes:
                    raise _too_large(self.max_file_bytes, _bytes_field(source))
                if size == 0:
                    raise ApiError("empty_file", "the file is empty", field=_bytes_field(source), status=400)
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
            content_type=stored_content_type(sniffed, filename),
            size=size,
            sha256=digest,
            storage_key=keys[0],
            width=media.width,
            height=media.height,
            variants=_variants(keys, media),
        )
        return Prepared(values, keys, item, placement)

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

    async def _materialize(self, source: Source, new: NewAttachment, path: str) -> str | None:
        """Write the item's bytes to ``path``; returns a file name the source suggested, if any."""
        settings = self.ctx.settings
        if isinstance(source, StagedSource):
            await self.ctx.storage.download_to(source.key, path)
            return None
        if isinstance(source, Base64Source):
            text = source.data
            if text is None:
                assert source.key is not None  # one of the two, by the contract
                text = (await self.ctx.storage.get_bytes(source.key)).decode("ascii", "replace")
            data = encoding.parse_data(text)
            encoding.check_size(data.base64, self.max_file_bytes)
            with open(path, "wb") as f:
                await asyncio.to_thread(encoding.decode_to, data.base64, f.write)
            return None
        assert isinstance(source, UrlSource) and new.url is not None  # check_new_attachment saw to it
        with open(path, "wb") as f:
            try:
                result = await fetch_to_file(
                    new.url,
                    f,
                    max_bytes=self.max_file_bytes,
                    allow_cidrs=settings.fetch_allow_cidrs,
                    connect_timeout=settings.fetch_connect_timeout_s,
                    total_timeout=settings.fetch_total_timeout_s,
                )
            except ApiError as exc:
                metrics.fetch_failed(exc.code)
                raise
        return result.filename

    async def _store(self, source: Source, path: str, attachment_id: str, media: MediaResult) -> list[str]:
        st = self.ctx.storage
        original = storage.object_key(self.account_id, attachment_id, "original")
        keys = [original]
        if isinstance(source, StagedSource):
            # Copy, not move: a retried job must still find its staged bytes.
            await st.copy(source.key, original)
        else:
            await st.put_file(original, path)
        if media.thumbnail is not None and media.small is not None:
            thumb = storage.object_key(self.account_id, attachment_id, "thumbnail")
            small = storage.object_key(self.account_id, attachment_id, "small")
            await asyncio.gather(st.put_bytes(thumb, media.thumbnail), st.put_bytes(small, media.small))
            keys += [thumb, small]
        return keys

    def _base_values(self, attachment_id: str, new: NewAttachment) -> dict[str, Any]:
        """The row to insert: every column, the create fields where they are columns, the rest as known so far."""
        values: dict[str, Any] = dict.fromkeys(repository.INSERT_COLUMNS)
        values.update((name, getattr(new, name)) for name in _STORED_CREATE_FIELDS)
        values.update(
            id=uuid.UUID(attachment_id),
            account_id=self.account_id,
            version=1,
            ancestors=[],
            created_by_type=self.job.actor.type,
            created_by_id=self.job.actor.id,
        )
        return values

    async def _placement(self, new: NewAttachment, values: dict[str, Any]) -> str | None:
        """Check ``version_of`` or ``parent_attachment_id`` before any bytes move, and take the place they
        give: "version" or "nested" (None: neither is given)."""
        if new.version_of is not None:
            await self._version_placement(new, values)
            return "version"
        if new.parent_attachment_id is not None:
            await self._nested_placement(new, values)
            return "nested"
        return None

    async def _version_placement(self, new: NewAttachment, values: dict[str, Any]) -> None:
        """A new version goes where the attachment it revises is: its target (a target given must be that one;
        none given inherits it), its field and, for a nested one, its parent attachment."""
        assert new.version_of is not None
        async with self.ctx.pool.acquire() as conn:
            old = await repository.get_attachment(conn, self.account_id, new.version_of)
        if old is None:
            raise ApiError("invalid_version", "version_of names no attachment of this account", field="version_of")
        if new.target_type is not None and (new.target_type, new.target_id) != (old["target_type"], old["target_id"]):
            raise ApiError(
                "invalid_version",
                "a new version goes on the target of the attachment it revises; leave target_type and target_id "
                "out to inherit it",
                field="version_of",
            )
        values.update(
            version_of=old["id"],  # it may have been named by its integer id
            target_type=old["target_type"],
            target_id=old["target_id"],
            field=old["field"] if new.field is None else new.field,
            parent_type=old["parent_type"] if new.parent_type is None else new.parent_type,
            parent_attachment_id=old["parent_attachment_id"],
        )

    async def _nested_placement(self, new: NewAttachment, values: dict[str, Any]) -> None:
        """A nested attachment's target is its parent attachment (``Attachment``, the parent's id), so it sits
        below the parent's record in the hierarchy: a list by that record with descendants, or a query by
        ``ancestor``, finds it. A target given is the record it was made through: the parent's, or one
        above it; one whose attachments cannot have nested ones is refused."""
        assert new.parent_attachment_id is not None
        nested_under_target = new.target_type not in (None, NESTED_TARGET_TYPE)
        if nested_under_target:
            check_nesting(new.target_type, self.ctx.settings.no_nesting_types)
        async with self.ctx.pool.acquire() as conn:
            parent = await repository.get_attachment(conn, self.account_id, new.parent_attachment_id)
        field = "parent_attachment_id"
        if parent is None:
            raise ApiError("invalid_parent", "parent_attachment_id names no attachment of this account", field=field)
        if nested_under_target:
            assert new.target_type is not None and new.target_id is not None  # check_placement
            if hierarchy.node(new.target_type, new.target_id) not in parent["ancestors"]:
                raise ApiError(
                    "invalid_parent",
                    f"parent_attachment_id names an attachment that is not on {new.target_type} {new.target_id} "
                    "or anywhere below it",
                    field=field,
                )
        elif new.target_id not in (None, str(parent["id"])):
            raise ApiError("invalid_parent", "a nested attachment's target is its parent", field="target_id")
        check_nesting(parent["target_type"], self.ctx.settings.no_nesting_types)
        values.update(
            parent_attachment_id=parent["id"],  # it may have been named by its integer id
            target_type=NESTED_TARGET_TYPE,
            target_id=str(parent["id"]),
        )

    async def commit(self, prepared: list[Prepared]) -> list[asyncpg.Record]:
        async with self.ctx.pool.acquire() as conn, conn.transaction():
            places_targets = any(p.item.fields.parent is not None for p in prepared)
            await targets.lock_hierarchy(conn, self.account_id, shared=not places_targets)
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
            for payload in moves:
                await repository.write_event(conn, self.account_id, "target.moved", None, self.job_id, payload)
            for row in announce:
                await repository.announce_created(conn, row, self.job_id)
            return rows

    async def _place(self, conn: asyncpg.Connection, p: Prepared) -> dict[str, Any] | None:
        """Fill in the row's ancestors and, for a new version, its number; inside the commit.
        Returns the ``target.moved`` payload when an inline parent moved the target."""
        values, new, moved = p.values, p.item.fields, None
        target_type, target_id = values["target_type"], values["target_id"]
        if target_type == NESTED_TARGET_TYPE and values["parent_attachment_id"] is not None:
            parent_chain = await targets.attachment_ancestors(conn, values["parent_attachment_id"])
            values["ancestors"] = [hierarchy.node(NESTED_TARGET_TYPE, target_id), *parent_chain]
        elif new.parent is not None:
            assert target_type is not None and target_id is not None  # check_placement
            values["ancestors"], moved = await targets.place_target(
                conn, self.account_id, target_type, target_id, (new.parent.type, new.parent.id)
            )
        elif target_type is not None and target_id is not None:
            values["ancestors"] = await targets.chain_of(conn, self.account_id, target_type, target_id)
        if p.placement == "version":
            values["version"], values["version_root"] = await repository.next_version(
                conn, self.account_id, values["version_of"], values["id"]
            )
        return moved


def _variants(keys: list[str], media: MediaResult) -> dict[str, Any] | None:
    if media.thumbnail is None or media.small is None:
        return None
    return {
        "thumbnail": {"key": keys[1], "size": len(media.thumbnail), "width": THUMBNAIL[0], "height": THUMBNAIL[1]},
        "small": {"key": keys[2], "size": len(media.small), "width": SMALL[0], "height": SMALL[1]},
    }


# A link with no name is named after its URL, cut to what a name may hold (a longer URL stays whole in url).
_NAME_MAX = FIELDS["name"].max_length or 255


def _link_name(new: NewAttachment) -> str:
    assert new.url is not None  # a link attachment has one (check_new_attachment)
    if new.name:
        return new.name
    return new.url if len(new.url) <= _NAME_MAX else new.url[: _NAME_MAX - 1] + "…"


def _too_large(limit: int, field: str) -> ApiError:
    return ApiError("size_exceeded", f"the file is larger than the limit of {limit} bytes", field=field, status=413)


async def _run(wctx: WorkerContext, job: IngestJob, attempt: Attempt) -> AnyOutcome:
    if attempt.number == 1:
        metrics.observe_queue_wait(attempt.enqueued_at)
    return await IngestRun(wctx, job).run(attempt)


async def _give_up(wctx: WorkerContext, job: IngestJob) -> AnyOutcome:
    return await IngestRun(wctx, job).give_up()


async def _finish(wctx: WorkerContext, job: IngestJob, answered_at: float | None) -> None:
    """The outcome is durable: the staged input goes (the sweeper takes it if this fails)."""
    await wctx.storage.delete_prefix(storage.staging_prefix(job.job_id))
    if answered_at is not None:
        metrics.observe("finish", time.perf_counter() - answered_at)


INGEST = JobSpec(IngestJob, _run, deadline_s=lambda s: s.job_timeout_s, give_up=_give_up, finish=_finish)
ingest = INGEST.entry
