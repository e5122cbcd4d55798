"""Objects as files under one directory; writes land atomically by rename, and durably: an object's bytes
are synced before it takes its name, and the name is synced in its directory before the write returns. A
write attachd has returned from (an upload it has acknowledged, or a file a worker committed a row for)
survives a crash of the machine, not only of the process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Collection
from pathlib import Path

import msgspec

from services.core.storage import CHUNK, Checkpoint, Resumable, SizeLimitExceeded, StoredObject

WRITE_BATCH = 1 << 20  # FileStorage.write_stream: bytes gathered per thread hop


def _write_all(fd: int, data: list[bytes]) -> None:
    """Write every buffer, in order, with as few system calls as the kernel allows."""
    pending = [memoryview(d) for d in data if len(d)]
    while pending:
        group = pending[:_IOV_MAX]
        written = os.writev(fd, group)
        done = 0
        while done < len(group) and written >= len(group[done]):
            written -= len(group[done])
            done += 1
        pending = pending[done:]
        if written:
            pending[0] = pending[0][written:]


_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


def _sync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _sync_dir(path: str | Path) -> None:
    """Make the names in a directory (a rename into it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _StagedFile:
    """One object being written under a temporary name; its methods run in a worker thread, one at a time.

    Only system calls run in the thread (no pathlib, no tempfile), so it holds the GIL as little as it can:
    the event loop keeps parsing other uploads meanwhile.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._dir = os.path.dirname(path)
        self._fd = -1
        self._tmp: str | None = None

    def _open(self) -> None:
        made_dir = False
        while True:
            tmp = f"{self._dir}/.part-{os.urandom(8).hex()}"
            try:
                self._fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            except FileNotFoundError:  # the first object under this prefix: make its directory, once
                if made_dir:
                    raise
                os.makedirs(self._dir, exist_ok=True)
                made_dir = True
                continue
            except FileExistsError:  # 64 random bits taken: try another name
                continue
            self._tmp = tmp
            return

    def write(self, data: list[bytes]) -> None:
        if self._fd < 0:
            self._open()
        _write_all(self._fd, data)

    def commit(self, data: list[bytes]) -> None:
        self.write(data)
        fd, self._fd = self._fd, -1
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)
        assert self._tmp is not None  # opened by write()
        os.replace(self._tmp, self._path)
        self._tmp = None
        _sync_dir(self._dir)

    async def abort_after(self, writing: asyncio.Future[None] | None) -> None:
        """Remove the temporary file once no thread touches it (a hop in flight finishes first)."""
        if writing is not None and not writing.done():
            try:
                await asyncio.wait([writing])
            finally:
                if not writing.done():  # cancelled while waiting: the hop's end removes it
                    writing.add_done_callback(lambda _: self.abort())
        if writing is None or writing.done():
            self.abort()

    def abort(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            self._tmp = None


class _GrowingFile:
    """A resumable write's file, opened at its durable offset (anything past it was never acknowledged and
    goes); its methods run in a worker thread, one at a time."""

    def __init__(self, path: str, offset: int) -> None:
        self._path = path
        self._offset = offset
        self._fd = -1
        self._named = False

    def write(self, data: list[bytes]) -> None:
        if self._fd < 0:
            os.makedirs(os.path.dirname(self._path), exist_ok=True)
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            os.ftruncate(self._fd, self._offset)
            os.lseek(self._fd, self._offset, os.SEEK_SET)
        _write_all(self._fd, data)

    def sync(self, data: list[bytes]) -> None:
        self.write(data)
        os.fdatasync(self._fd)
        if self._offset == 0 and not self._named:  # a new file: its name must outlast a crash too
            _sync_dir(os.path.dirname(self._path))
            self._named = True

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


class FileStorage:
    """Objects as files under one directory; writes land atomically by rename."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._real_root = os.path.realpath(self.root)

    def _file(self, key: str) -> str:
        """The path of ``key``, found without a system call (this runs on the event loop): keys are made by
        attachd, never by a client, so ``..`` is all that could lead out of the root."""
        path = os.path.normpath(os.path.join(self._real_root, key))
        if path != self._real_root and not path.startswith(self._real_root + os.sep):
            raise ValueError(f"storage key escapes the root: {key!r}")
        return path

    def _path(self, key: str) -> Path:
        return Path(self._file(key))

    async def write_stream(self, key: str, chunks: AsyncIterator[bytes], *, limit: int | None = None) -> int:
        """Write the chunks to ``key``; it appears (by rename) only once all of them are written.

        Chunks are gathered into batches of WRITE_BATCH bytes and each batch is written by one thread hop
        (``os.writev``, no joining), while the next batch is being received: a thread hop per chunk cost
        more CPU than the write itself. A stream that fits in one batch takes a single hop from mkdir to
        rename.
        """
        loop = asyncio.get_running_loop()
        staged = _StagedFile(self._file(key))
        batch: list[bytes] = []
        batched = size = 0
        writing: asyncio.Future[None] | None = None  # the hop in flight, at most one
        try:
            async for chunk in chunks:
                size += len(chunk)
                if limit is not None and size > limit:
                    raise SizeLimitExceeded(key)
                batch.append(chunk)
                batched += len(chunk)
                if batched >= WRITE_BATCH:
                    if writing is not None:
                        await writing
                    writing = loop.run_in_executor(None, staged.write, batch)
                    batch, batched = [], 0
            if writing is not None:
                await writing
            writing = loop.run_in_executor(None, staged.commit, batch)
            await writing
        except BaseException:
            await staged.abort_after(writing)
            raise
        return size

    async def append(
        self, write: Resumable, chunks: AsyncIterator[bytes], checkpoint: Checkpoint | None = None
    ) -> Resumable:
        """Write at the write's offset in its file, batched as ``write_stream`` does (one thread hop in flight
        while the next batch arrives); every ``part_size`` bytes (with ``checkpoint``) and at the end, the hop
        also syncs the file to disk: only then are its bytes counted as stored."""
        loop = asyncio.get_running_loop()
        growing = _GrowingFile(self._file(write.key), write.offset)
        batch: list[bytes] = []
        batched = 0
        written = synced = write.offset
        writing: asyncio.Future[None] | None = None  # the hop in flight, at most one
        syncing_to: int | None = None  # the offset the hop in flight makes durable, if it syncs
        try:
            async for chunk in chunks:
                batch.append(chunk)
                batched += len(chunk)
                if batched < WRITE_BATCH:
                    continue
                if writing is not None:
                    await writing
                if syncing_to is not None and checkpoint is not None:
                    await checkpoint(msgspec.structs.replace(write, offset=syncing_to))
                written += batched
                syncing_to = written if checkpoint is not None and written - synced >= write.part_size else None
                if syncing_to is not None:
                    synced = syncing_to
                writing = loop.run_in_executor(None, growing.sync if syncing_to else growing.write, batch)
                batch, batched = [], 0
            if writing is not None:
                await writing
            writing = loop.run_in_executor(None, growing.sync, batch)
            await writing
            return msgspec.structs.replace(write, offset=written + batched)
        finally:
            if writing is not None and not writing.done():
                await asyncio.wait([writing])
            growing.close()

    async def finish(self, write: Resumable) -> None:
        """The file is the object already; an empty upload never made one."""
        if write.offset == 0 and await self.size(write.key) is None:
            await self.put_bytes(write.key, b"")

    async def abort(self, write: Resumable) -> None:
        await self.delete(write.key)

    async def put_bytes(self, key: str, data: bytes) -> None:
        staged = _StagedFile(self._file(key))
        writing = asyncio.get_running_loop().run_in_executor(None, staged.commit, [data])
        try:
            await writing
        except BaseException:
            await staged.abort_after(writing)
            raise

    async def put_file(self, key: str, path: str) -> None:
        dst = self._path(key)

        def copy() -> None:
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".part-{dst.name}")
            shutil.copyfile(path, tmp)
            _sync_file(tmp)
            os.replace(tmp, dst)
            _sync_dir(dst.parent)

        await asyncio.to_thread(copy)

    async def get_bytes(self, key: str) -> bytes:
        return await asyncio.to_thread(self._path(key).read_bytes)

    async def download_to(self, key: str, path: str) -> None:
        await asyncio.to_thread(shutil.copyfile, self._path(key), path)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        f = await asyncio.to_thread(open, self._path(key), "rb")
        try:
            await asyncio.to_thread(f.seek, start)
            remaining = None if end is None else end - start + 1
            while remaining is None or remaining > 0:
                want = CHUNK if remaining is None else min(CHUNK, remaining)
                chunk = await asyncio.to_thread(f.read, want)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            f.close()

    async def size(self, key: str) -> int | None:
        try:
            return (await asyncio.to_thread(self._path(key).stat)).st_size
        except FileNotFoundError:
            return None

    def local_path(self, key: str) -> str | None:
        return str(self._path(key))

    async def copy(self, src: str, dst: str) -> None:
        source, target = self._path(src), self._path(dst)

        def link() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".part-{target.name}")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            try:
                os.link(source, tmp)  # objects are immutable, so a second name is a copy (of synced bytes)
            except OSError:
                shutil.copyfile(source, tmp)
                _sync_file(tmp)
            os.replace(tmp, target)
            _sync_dir(target.parent)
            # Renaming one hard link over another of the same file does nothing (POSIX): a re-run's temp
            # name would stay.
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

        await asyncio.to_thread(link)

    async def delete(self, *keys: str) -> None:
        def unlink() -> None:
            for key in keys:
                with contextlib.suppress(FileNotFoundError):
                    self._path(key).unlink()

        await asyncio.to_thread(unlink)

    async def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)

        def remove() -> None:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

        await asyncio.to_thread(remove)

    async def list(self, prefix: str) -> AsyncIterator[StoredObject]:
        base = self._path(prefix)

        def walk() -> list[StoredObject]:
            found = []
            for dirpath, _, files in os.walk(base):
                for name in files:
                    if name.startswith(".part-"):
                        continue
                    full = Path(dirpath) / name
                    st = full.stat()
                    found.append(StoredObject(str(full.relative_to(self.root)), st.st_size, st.st_mtime))
            return found

        for obj in await asyncio.to_thread(walk):
            yield obj

    async def remove_partials(self, prefix: str, older_than: float, keep: Collection[str] = ()) -> int:
        """Remove writes that never finished (``.part-`` files of a killed process) last touched before
        ``older_than`` (a Unix time), and the directories they leave empty; how many files went. (A resumable
        write grows its file in place, making no ``.part-`` file: ``keep`` has nothing to spare here.)"""
        base = self._path(prefix)

        def sweep() -> int:
            removed = 0
            for dirpath, _, files in os.walk(base, topdown=False):
                for name in files:
                    path = os.path.join(dirpath, name)
                    with contextlib.suppress(FileNotFoundError):
                        if name.startswith(".part-") and os.lstat(path).st_mtime < older_than:
                            os.unlink(path)
                            removed += 1
                if dirpath != str(base):
                    with contextlib.suppress(OSError):  # not empty, or gone: fine
                        os.rmdir(dirpath)
            return removed

        return await asyncio.to_thread(sweep)

    async def ping(self) -> None:
        if not await asyncio.to_thread(os.access, self.root, os.W_OK):
            raise RuntimeError(f"storage directory {self.root} is not writable")

    async def close(self) -> None:
        return None
