"""``attachd upload``, ``attachd ls``, ``attachd get``, ``attachd rm``: the client library at a terminal.

They talk to the attachd at ``--url`` or ``ATTACHD_URL`` with the token of ``--token`` or ``ATTACHD_TOKEN``
(a JWT or an API key). ``attachd upload`` sends files and folders (recursively), several at a time, with a
progress bar per file and one for the whole; a file over ``--tus-threshold`` goes over tus and is resumed
by the next run if this one is stopped (attachd_client/state.py); a summary table ends it, and the exit
status is 1 if any file failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import filesize
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from attachd_client import errors, tus
from attachd_client.client import DEFAULT_TUS_THRESHOLD, AsyncClient
from attachd_client.models import Attachment, Target
from attachd_client.state import ResumeState, state_dir, upload_key

DEFAULT_URL = "http://127.0.0.1:8080"
FAILED_EXIT = 1
SHOWN_BARS = 12  # more files than this: a file's bar shows only while it is under way
INTERRUPTED_EXIT = 130  # as a shell reports a command Ctrl-C stopped
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


# -- pure rules ----------------------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """``123``, ``512K``, ``8M``, ``1.5G`` (binary units; a trailing ``B`` or ``iB`` is allowed) as bytes."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"a size is a number with an optional K, M, G or T (not {text!r})")
    return int(float(match[1]) * _UNITS[match[2].lower()])


@dataclass(frozen=True)
class LocalFile:
    path: Path
    label: str  # as shown and, from a folder, the attachment's name: the path below the folder's parent


def collect_files(paths: list[Path]) -> tuple[list[LocalFile], list[Path]]:
    """The files to upload: each file named, and every file below each folder named (sorted, symbolic
    links to folders not followed); and the paths that are neither."""
    found: list[LocalFile] = []
    missing: list[Path] = []
    for path in paths:
        if path.is_file():
            found.append(LocalFile(path, path.name))
        elif path.is_dir():
            base = path.resolve().parent
            found.extend(LocalFile(file, str(file.resolve().relative_to(base))) for file in _walk(path))
        else:
            missing.append(path)
    return found, missing


def _walk(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            file = Path(root) / name
            if file.is_file():
                yield file


# -- the commands ------------------------------------------------------------------------------------------


def _connection(args: argparse.Namespace) -> tuple[str, str]:
    url = args.url or os.environ.get("ATTACHD_URL") or DEFAULT_URL
    token = args.token or os.environ.get("ATTACHD_TOKEN")
    if not token:
        sys.exit("attachd: no token: set ATTACHD_TOKEN or pass --token (`attachd token` or `attachd keys create`)")
    return url, token


def _run(args: argparse.Namespace, work: Callable[[AsyncClient], Coroutine[Any, Any, int]], **options: Any) -> None:
    """Run one command's work with a client; a refusal is one line on stderr and exit status 1."""
    url, token = _connection(args)

    async def run() -> int:
        async with AsyncClient(url, token, **options) as client:
            return await work(client)

    try:
        status = asyncio.run(run())
    except errors.AttachdError as exc:
        sys.exit(f"attachd {args.command}: {_said(exc)}")
    except KeyboardInterrupt:
        again = "; run it again to resume the uploads it began" if args.command == "upload" else ""
        print(f"attachd {args.command}: interrupted{again}", file=sys.stderr)
        status = INTERRUPTED_EXIT
    sys.exit(status)


def _said(error: errors.AttachdError) -> str:
    return f"{error.message} ({error.code}" + (f", {error.field})" if error.field else ")")


@dataclass
class UploadResult:
    file: LocalFile
    size: int
    attachment: Attachment | None = None
    error: str | None = None
    resumed_at: int | None = None  # the offset a remembered upload went on from
    earlier: bool = False  # uploaded by an earlier run: left alone


class UploadRun:
    """One ``attachd upload``: the files, ``parallel`` at a time, each with its bar, and the total's. With
    many files, a file's bar shows only while it is under way."""

    def __init__(self, client: AsyncClient, args: argparse.Namespace, state: ResumeState, progress: Progress) -> None:
        self.client = client
        self.target: Target = args.target
        self.name: str | None = args.name
        self.rate: int | None = args.limit_rate
        self.again: bool = args.again
        self.state = state
        self.progress = progress
        self.slots = asyncio.Semaphore(args.parallel)
        self.total = progress.add_task("total", total=0)
        self.total_sent = 0
        self.keep_bars = True

    async def upload_all(self, files: list[LocalFile]) -> list[UploadResult]:
        sizes = [_size(file.path) for file in files]
        self.progress.update(self.total, total=sum(sizes))
        self.keep_bars = len(files) <= SHOWN_BARS
        tasks = [
            self.progress.add_task(file.label, total=size, start=False, visible=self.keep_bars)
            for file, size in zip(files, sizes, strict=True)
        ]
        return await asyncio.gather(
            *(self.upload_one(file, size, task) for file, size, task in zip(files, sizes, tasks, strict=True))
        )

    def _report(self, task: TaskID) -> Callable[[int], None]:
        """What a file's upload tells of its progress: its bar and the total's moved."""
        file_sent = 0

        def sent(count: int) -> None:
            nonlocal file_sent
            self.total_sent += count - file_sent
            file_sent = count
            self.progress.update(task, completed=count)
            self.progress.update(self.total, completed=self.total_sent)

        return sent

    async def upload_one(self, file: LocalFile, size: int, task: TaskID) -> UploadResult:
        async with self.slots:
            self.progress.start_task(task)
            self.progress.update(task, visible=True)
            try:
                result = await self._upload(file, size, self._report(task))
            except OSError as exc:  # gone or unreadable since it was found
                result = UploadResult(file, size, error=f"{exc.strerror or exc} (local file)")
            if result.error is not None:
                self.progress.update(task, description=f"[red]{file.label}")
            self.progress.update(task, visible=self.keep_bars)
            return result

    async def _upload(self, file: LocalFile, size: int, report: Callable[[int], None]) -> UploadResult:
        result = UploadResult(file, size)
        stat = file.path.stat()
        key = upload_key(self.client.url, str(self.target), file.path, stat.st_size, stat.st_mtime_ns)
        if not self.again and (earlier := await self._earlier(key)) is not None:
            result.attachment, result.earlier = earlier, True
            report(size)
            return result
        resume_url = self.state.url(key)
        reports: list[int] = []
        new_upload: list[str] = []

        def began(url: str) -> None:
            new_upload.append(url)
            self.state.uploading(key, url, file.path)

        def sent(count: int) -> None:
            reports.append(count)
            report(count)

        try:
            result.attachment = await self.client.upload(
                file.path,
                self.target,
                name=self.name or (file.label if file.label != file.path.name else None),
                progress=sent,
                resume_url=resume_url,
                on_resumable=began,
                rate=self.rate,
            )
        except errors.AttachdError as exc:
            result.error = _said(exc)
            if not _worth_resuming(exc):
                self.state.forget(key)
            return result
        self.state.uploaded(key, result.attachment.id, file.path)
        report(size)
        if resume_url is not None and not new_upload and reports:
            result.resumed_at = reports[0]  # a resumed upload first reports the offset it goes on from
        return result

    async def _earlier(self, key: str) -> Attachment | None:
        """The attachment an earlier run made of this file, unless it has been deleted since."""
        attachment_id = self.state.attachment_id(key)
        if attachment_id is None:
            return None
        try:
            return await self.client.get(attachment_id)
        except errors.NotFound:
            return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _worth_resuming(error: errors.AttachdError) -> bool:
    """Whether the next run should go on with this upload rather than start it again."""
    return isinstance(error, errors.ConnectionFailed | errors.ServerError | errors.Locked) or (error.code == "timeout")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}", justify="left"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def summary(results: list[UploadResult], missing: list[Path]) -> Table:
    table = Table(title="attachd upload", title_justify="left")
    table.add_column("file", overflow="fold")
    table.add_column("size", justify="right")
    table.add_column("result")
    table.add_column("id / error", overflow="fold")
    for result in results:
        size = filesize.decimal(result.size)
        if result.attachment is not None:
            how = "uploaded" if result.resumed_at is None else f"resumed at {filesize.decimal(result.resumed_at)}"
            if result.earlier:
                how = "uploaded earlier"
            table.add_row(result.file.label, size, f"[green]{how}", result.attachment.id)
        else:
            table.add_row(result.file.label, size, "[red]failed", result.error or "")
    for path in missing:
        table.add_row(str(path), "-", "[red]failed", "no such file or folder")
    return table


def tally(results: list[UploadResult], missing: list[Path]) -> tuple[str, int]:
    """The summary's last line, and how many files failed."""
    earlier = sum(result.earlier for result in results)
    uploaded = sum(result.attachment is not None for result in results) - earlier
    failed = len(results) - uploaded - earlier + len(missing)
    line = f"{uploaded} uploaded, " + (f"{earlier} uploaded earlier, " if earlier else "") + f"{failed} failed"
    return line, failed


def cmd_upload(args: argparse.Namespace) -> None:
    files, missing = collect_files([Path(p) for p in args.paths])
    if args.name and len(files) + len(missing) > 1:
        sys.exit("attachd upload: --name names one file; this upload has several")
    console, errors_console = _console(sys.stdout), _console(sys.stderr)
    state = ResumeState(state_dir() / "uploads.json")

    async def work(client: AsyncClient) -> int:
        with _progress(errors_console) as progress:
            results = await UploadRun(client, args, state, progress).upload_all(files)
        console.print(summary(results, missing))
        line, failed = tally(results, missing)
        console.print(line)
        return FAILED_EXIT if failed else 0

    _run(args, work, tus_threshold=args.tus_threshold, chunk_size=args.chunk_size)


def _console(file: Any) -> Console:
    # Not a terminal (a pipe, a log) and no COLUMNS: wide enough that ids are not folded.
    return Console(file=file, width=None if file.isatty() or "COLUMNS" in os.environ else 120)


def cmd_ls(args: argparse.Namespace) -> None:
    async def work(client: AsyncClient) -> int:
        table = Table(box=None, pad_edge=False)
        table.add_column("ID", no_wrap=True)
        table.add_column("SEQ", justify="right", no_wrap=True)
        table.add_column("NAME", overflow="fold")
        table.add_column("SIZE", justify="right", no_wrap=True)
        table.add_column("TYPE", overflow="fold")
        table.add_column("CREATED", no_wrap=True)
        rows = client.list(args.target, order_by=args.order_by, versions="all" if args.all_versions else None)
        async for a in rows:
            created = a.created_at.strftime("%Y-%m-%d %H:%M:%S") if a.created_at else "-"
            size = filesize.decimal(a.size) if a.size is not None else "-"
            table.add_row(a.id, str(a.seq), a.name or "", size, a.content_type or a.attachment_type or "", created)
        _console(sys.stdout).print(table)
        return 0

    _run(args, work)


def cmd_get(args: argparse.Namespace) -> None:
    async def work(client: AsyncClient) -> int:
        dest = args.output
        if dest is None or dest.is_dir():
            record = await client.get(args.id)
            name = Path(record.filename or f"attachment-{record.id}").name
            dest = (dest or Path()) / name
        saved = await client.download(args.id, dest, variant=args.variant)
        print(f"{saved} ({filesize.decimal(saved.stat().st_size)})")
        return 0

    _run(args, work)


def cmd_rm(args: argparse.Namespace) -> None:
    async def work(client: AsyncClient) -> int:
        for attachment_id in args.ids:
            await client.delete(attachment_id)
            print(f"deleted {attachment_id}")
        return 0

    _run(args, work)


# -- the parsers -------------------------------------------------------------------------------------------


def argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` that prints the parser's own message when a value is refused."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help=f"attachd's address (default: ATTACHD_URL, else {DEFAULT_URL})")
    parser.add_argument("--token", default=None, help="a JWT or an API key (default: ATTACHD_TOKEN)")


def add_parsers(sub: Any) -> None:
    """``upload``, ``ls``, ``get`` and ``rm`` on the ``attachd`` command (services/cli.py)."""
    upload = sub.add_parser("upload", help="upload files and folders to a target, resumably, with progress")
    upload.add_argument("paths", nargs="+", metavar="PATH", help="files, and folders (uploaded recursively)")
    upload.add_argument("--target", required=True, type=argument_type(Target.parse), help="TYPE:ID, like Task:42")
    upload.add_argument("--name", default=None, help="the attachment's name (one file only)")
    upload.add_argument(
        "--again", action="store_true", help="upload files an earlier run uploaded too (default: leave them)"
    )
    upload.add_argument("--parallel", type=argument_type(_positive), default=2, help="files at a time (default 2)")
    upload.add_argument(
        "--tus-threshold",
        type=argument_type(parse_size),
        default=DEFAULT_TUS_THRESHOLD,
        help="files larger than this go over tus, resumably (default 8M)",
    )
    upload.add_argument(
        "--chunk-size", type=argument_type(parse_size), default=tus.DEFAULT_CHUNK, help="tus chunk size (default 8M)"
    )
    upload.add_argument(
        "--limit-rate", type=argument_type(parse_size), default=None, help="bytes per second per file, like 2M"
    )
    _connection_options(upload)
    upload.set_defaults(run=cmd_upload)

    ls = sub.add_parser("ls", help="list a target's attachments")
    ls.add_argument("--target", required=True, type=argument_type(Target.parse), help="TYPE:ID, like Task:42")
    ls.add_argument("--order-by", default="-created_at", help="as the API's order_by (default -created_at)")
    ls.add_argument("--all-versions", action="store_true", help="older versions too")
    _connection_options(ls)
    ls.set_defaults(run=cmd_ls)

    get = sub.add_parser("get", help="download an attachment's file")
    get.add_argument("id", help="the attachment's id or integer id")
    get.add_argument("-o", "--output", type=Path, default=None, help="a file, or a folder for it (default: here)")
    get.add_argument("--variant", choices=["thumbnail", "small"], default=None, help="a thumbnail instead")
    _connection_options(get)
    get.set_defaults(run=cmd_get)

    rm = sub.add_parser("rm", help="delete attachments")
    rm.add_argument("ids", nargs="+", metavar="ID")
    _connection_options(rm)
    rm.set_defaults(run=cmd_rm)
