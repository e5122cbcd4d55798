"""Bytes on their way: a file (or a slice of one) sent in pieces that report progress and may be paced,
and a download written to a temporary file that takes the destination's name only once it is whole."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import IO, Any

from aiohttp.payload import AsyncIterablePayload

PIECE = 256 * 1024  # what is sent between two progress reports
Progress = Callable[[int], None]  # bytes of the file sent (or received) so far


class SizedStream(AsyncIterablePayload):
    """Bytes from an async iterator, with their size known up front: the request gets a Content-Length
    (attachd answers 411 to a chunked upload while a byte budget applies)."""

    def __init__(self, chunks: AsyncIterable[bytes], size: int, **kwargs: Any) -> None:
        super().__init__(chunks, **kwargs)
        self._size = size


class Pacer:
    """At most ``rate`` bytes per second (None: as fast as it goes), over the pacer's whole life."""

    def __init__(self, rate: int | None) -> None:
        self._rate = rate
        self._started: float | None = None
        self._sent = 0

    async def sent(self, count: int) -> None:
        if not self._rate:
            return
        loop = asyncio.get_running_loop()
        if self._started is None:
            self._started = loop.time()
        self._sent += count
        ahead = self._sent / self._rate - (loop.time() - self._started)
        if ahead > 0:
            await asyncio.sleep(ahead)


def pieces(data: bytes, size: int = PIECE) -> Iterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield view[start : start + size]


async def bytes_in_pieces(data: bytes, start: int, progress: Progress | None, pacer: Pacer) -> AsyncIterator[bytes]:
    """``data`` (the bytes of a file from offset ``start``) in pieces, reporting ``start`` + what is sent."""
    sent = start
    for piece in pieces(data):
        yield bytes(piece)
        sent += len(piece)
        if progress is not None:
            progress(sent)
        await pacer.sent(len(piece))


async def file_in_pieces(path: Path, progress: Progress | None, pacer: Pacer) -> AsyncIterator[bytes]:
    """A whole file in pieces, read off the event loop."""
    sent = 0
    with path.open("rb") as file:
        while piece := await asyncio.to_thread(file.read, PIECE):
            yield piece
            sent += len(piece)
            if progress is not None:
                progress(sent)
            await pacer.sent(len(piece))


def read_slice(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as file:
        file.seek(offset)
        return file.read(size)


class AtomicFile:
    """A file written under a temporary name beside ``dest``, renamed to ``dest`` once it is whole and on
    disk; removed if the writing fails. The SHA-256 of what was written is ``sha256``."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self._hash = hashlib.sha256()
        self._file: IO[bytes] | None = None
        self.size = 0

    def __enter__(self) -> AtomicFile:
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self._file = tempfile.NamedTemporaryFile(  # closed in __exit__, renamed or removed
            dir=self.dest.parent, prefix=f".{self.dest.name}.", suffix=".part", delete=False
        )
        return self

    def write(self, chunk: bytes) -> None:
        assert self._file is not None
        self._file.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        assert self._file is not None
        temporary = Path(self._file.name)
        try:
            if kind is None:
                self._file.flush()
                os.fsync(self._file.fileno())
            self._file.close()
            if kind is None:
                os.replace(temporary, self.dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
