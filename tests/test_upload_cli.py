"""``attachd upload``, ``ls``, ``get`` and ``rm`` run as a user runs them: the command in a process of its own,
against a real attachd on 127.0.0.1, configured by ATTACHD_URL and ATTACHD_TOKEN (or --url and --token)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from yarl import URL

from attachd_client.cli import collect_files, parse_size
from attachd_client.tus import upload_id
from tests.conftest import Service, jpeg_bytes, png_bytes

MiB = 1 << 20


def test_sizes_are_bytes_with_binary_units():
    assert [parse_size(s) for s in ("123", "512K", "8M", "8MiB", "1.5G", "2 mb")] == [
        123,
        512 * 1024,
        8 * MiB,
        8 * MiB,
        int(1.5 * 1024 * MiB),
        2 * MiB,
    ]
    for bad in ("", "M", "-1", "8X", "1,5M"):
        with pytest.raises(ValueError, match="a size is"):
            parse_size(bad)


def test_folders_are_walked_recursively_in_order_and_labelled_below_their_parent(tmp_path):
    (tmp_path / "photos" / "trip").mkdir(parents=True)
    for name in ("photos/b.jpg", "photos/a.jpg", "photos/trip/c.txt", "loose.txt"):
        (tmp_path / name).write_text(name)
    (tmp_path / "photos" / "link").symlink_to(tmp_path / "photos" / "trip")  # a link to a folder: not followed
    files, missing = collect_files([tmp_path / "photos", tmp_path / "loose.txt", tmp_path / "nowhere"])
    assert [f.label for f in files] == ["photos/a.jpg", "photos/b.jpg", "photos/trip/c.txt", "loose.txt"]
    assert files[3].path == tmp_path / "loose.txt" and missing == [tmp_path / "nowhere"]


def text_bytes(size: int) -> bytes:
    return base64.b64encode(os.urandom(size))[:size]


def command_env(svc: Service, tmp_path: Path, **more: str) -> dict[str, str]:
    return {
        **os.environ,
        "ATTACHD_URL": str(svc.client.make_url("/")),
        "ATTACHD_TOKEN": svc.token(),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        **more,
    }


async def start(*args: str, env: dict[str, str], cwd: Path | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
    )


async def attachd(*args: str, env: dict[str, str], cwd: Path | None = None) -> tuple[int, str, str]:
    """Run ``attachd ARGS`` to its end (the test's server answers meanwhile): exit status, stdout, stderr."""
    proc = await start(*args, env=env, cwd=cwd)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def stored(svc: Service, row: Any) -> bytes:
    return b"".join([chunk async for chunk in svc.storage.read(row["storage_key"])])


def remembered(tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "state" / "attachd" / "uploads.json"
    return orjson.loads(path.read_bytes()) if path.exists() else {}


async def test_a_folder_is_uploaded_recursively_with_progress_and_a_summary(service, tmp_path):
    folder = tmp_path / "photos"
    (folder / "trip").mkdir(parents=True)
    contents = {
        "photos/a.jpg": jpeg_bytes(640, 480),
        "photos/trip/b.png": png_bytes(320, 240),
        "photos/trip/notes.txt": text_bytes(2 * MiB + 5),  # over the threshold: over tus
    }
    for label, data in contents.items():
        (tmp_path / label).write_bytes(data)
    env = command_env(service, tmp_path)
    status, out, err = await attachd(
        "upload", str(folder), "--target", "Task:42", "--parallel", "2", "--tus-threshold", "1M",
        "--chunk-size", "512K", env=env,
    )  # fmt: skip
    assert status == 0, err
    assert "3 uploaded, 0 failed" in out
    rows = {row["name"]: row for row in await service.rows()}
    assert sorted(rows) == sorted(contents)  # named by their path below the folder's parent
    for label, data in contents.items():
        row = rows[label]
        assert (row["target_type"], row["target_id"], row["filename"]) == ("Task", "42", Path(label).name)
        assert bytes(row["sha256"]) == hashlib.sha256(data).digest() and await stored(service, row) == data
        summary_line = next(line for line in out.splitlines() if label in line)
        assert "uploaded" in summary_line and str(row["id"]) in summary_line
    assert "total" in err and "notes.txt" in err  # the progress bars, on stderr
    done = remembered(tmp_path).values()  # nothing left to resume; what each file became
    assert sorted(entry["attachment_id"] for entry in done) == sorted(str(row["id"]) for row in rows.values())
    assert not any("url" in entry for entry in done)


async def test_a_second_run_leaves_alone_what_the_first_uploaded_unless_asked(service, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (folder / name).write_text(name)
    env = command_env(service, tmp_path)
    status, out, _ = await attachd("upload", str(folder), "--target", "Task:42", env=env)
    assert status == 0 and "3 uploaded, 0 failed" in out
    first = {row["name"]: str(row["id"]) for row in await service.rows()}

    deleted = await service.client.delete(f"/v1/attachments/{first['docs/b.txt']}", headers=service.auth())
    assert deleted.status == 204
    (folder / "c.txt").write_text("c, changed")  # another file now
    status, out, _ = await attachd("upload", str(folder), "--target", "Task:42", env=env)
    assert status == 0 and "2 uploaded, 1 uploaded earlier, 0 failed" in out
    line_a = next(line for line in out.splitlines() if "docs/a.txt" in line)
    assert "uploaded earlier" in line_a and first["docs/a.txt"] in line_a
    live = await service.pool.fetch(
        "SELECT name FROM attachments WHERE account_id = $1 AND canceled_at IS NULL ORDER BY name", service.account
    )
    assert [row["name"] for row in live] == ["docs/a.txt", "docs/b.txt", "docs/c.txt", "docs/c.txt"]

    status, out, _ = await attachd("upload", str(folder), "--target", "Task:42", "--again", env=env)
    assert status == 0 and "3 uploaded, 0 failed" in out
    assert len(await service.rows()) == 8


async def test_with_many_files_a_bar_shows_only_while_its_file_is_under_way(service, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for n in range(13):
        (folder / f"f{n:02}.txt").write_text(f"file {n}")
    status, out, err = await attachd("upload", str(folder), "--target", "Task:42", env=command_env(service, tmp_path))
    assert status == 0 and "13 uploaded, 0 failed" in out
    assert "total" in err and "many/f00.txt" not in err  # the last picture of the bars: the total only
    assert all(f"many/f{n:02}.txt" in out for n in range(13))  # the summary names every file
    assert len(await service.rows()) == 13


async def test_one_bad_file_fails_alone_and_the_exit_status_says_so(service, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "good.txt").write_bytes(b"fine")
    (folder / "empty.txt").write_bytes(b"")
    env = command_env(service, tmp_path)
    status, out, err = await attachd("upload", "docs", "nowhere.txt", "--target", "Task:42", env=env, cwd=tmp_path)
    assert status == 1, err
    assert "1 uploaded, 2 failed" in out
    assert "empty_file" in next(line for line in out.splitlines() if "docs/empty.txt" in line)
    assert "no such file" in next(line for line in out.splitlines() if "nowhere.txt" in line)
    assert [row["name"] for row in await service.rows()] == ["docs/good.txt"]


async def head_offset(svc: Service, url: str) -> int:
    response = await svc.client.head(URL(url).path, headers={**svc.auth(), "Tus-Resumable": "1.0.0"})
    assert response.status == 200
    return int(response.headers["Upload-Offset"])


async def test_a_killed_upload_is_resumed_by_the_next_run(service, tmp_path):
    data = text_bytes(6 * MiB)
    path = tmp_path / "video.txt"
    path.write_bytes(data)
    env = command_env(service, tmp_path)
    args = ("upload", str(path), "--target", "Task:42", "--tus-threshold", "1M", "--chunk-size", "256K")
    first = await start(*args, "--limit-rate", "1M", env=env)  # about 6 s: time to kill it half-way
    try:
        deadline = time.monotonic() + 60
        while not (entries := remembered(tmp_path)):
            assert time.monotonic() < deadline and first.returncode is None, "no upload was remembered"
            await asyncio.sleep(0.05)
        (entry,) = entries.values()
        url = entry["url"]
        assert entry["path"] == str(path)
        while (offset := await head_offset(service, url)) < MiB:
            assert time.monotonic() < deadline, "the upload did not progress"
            await asyncio.sleep(0.05)
    finally:
        first.kill()
        await first.wait()
    offset = await head_offset(service, url)
    assert MiB <= offset < len(data)  # killed half-way

    status, out, err = await attachd(*args, env=env)
    assert status == 0, err
    assert "resumed at" in out and "1 uploaded, 0 failed" in out
    rows = await service.rows()
    assert [str(row["id"]) for row in rows] == [upload_id(url)]  # the same upload, finished; no second one
    assert bytes(rows[0]["sha256"]) == hashlib.sha256(data).digest() and await stored(service, rows[0]) == data
    assert [entry.get("url") for entry in remembered(tmp_path).values()] == [None]  # no upload left to resume


async def test_ls_get_and_rm(service, tmp_path):
    photo = jpeg_bytes(400, 300)
    (tmp_path / "front.jpg").write_bytes(photo)
    (tmp_path / "notes.txt").write_bytes(b"meeting notes")
    # --url and --token instead of the environment
    env = {k: v for k, v in os.environ.items() if k not in ("ATTACHD_URL", "ATTACHD_TOKEN")}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    flags = ("--url", str(service.client.make_url("/")), "--token", service.token())
    status, _, err = await attachd(
        "upload", str(tmp_path / "front.jpg"), str(tmp_path / "notes.txt"), "--target", "Task:42", *flags, env=env
    )
    assert status == 0, err
    photo_row, notes_row = sorted(await service.rows(), key=lambda r: r["name"])

    status, out, _ = await attachd("ls", "--target", "Task:42", *flags, env=env)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "SEQ", "NAME", "SIZE", "TYPE", "CREATED"]
    listed = {line.split()[0]: line for line in lines[1:]}
    assert sorted(listed) == sorted([str(photo_row["id"]), str(notes_row["id"])])
    assert "front.jpg" in listed[str(photo_row["id"])] and "image/jpeg" in listed[str(photo_row["id"])]

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    status, out, _ = await attachd("get", str(photo_row["id"]), "-o", str(out_dir / "copy.jpg"), *flags, env=env)
    assert status == 0 and (out_dir / "copy.jpg").read_bytes() == photo
    status, out, _ = await attachd("get", str(notes_row["seq"]), *flags, env=env, cwd=out_dir)  # by integer id
    assert status == 0 and (out_dir / "notes.txt").read_bytes() == b"meeting notes"
    (out_dir / "photos").mkdir()
    status, out, _ = await attachd("get", str(photo_row["seq"]), "-o", str(out_dir / "photos"), *flags, env=env)
    assert status == 0 and (out_dir / "photos" / "front.jpg").read_bytes() == photo  # a folder: its filename
    assert sorted(os.listdir(out_dir)) == ["copy.jpg", "notes.txt", "photos"]

    status, out, _ = await attachd("rm", str(photo_row["id"]), *flags, env=env)
    assert status == 0 and out.strip() == f"deleted {photo_row['id']}"
    canceled_at = await service.pool.fetchval("SELECT canceled_at FROM attachments WHERE id = $1", photo_row["id"])
    assert canceled_at is not None
    status, _, err = await attachd("get", str(photo_row["id"]), "-o", str(out_dir / "gone.jpg"), *flags, env=env)
    assert status == 1 and "(not_found)" in err and not (out_dir / "gone.jpg").exists()


async def test_configuration_and_usage_mistakes_are_one_clear_line(service, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ATTACHD_TOKEN"}
    status, _, err = await attachd("ls", "--target", "Task:42", env=env)
    assert status == 1 and "no token: set ATTACHD_TOKEN or pass --token" in err
    env = command_env(service, tmp_path, ATTACHD_TOKEN="not-a-token")
    status, _, err = await attachd("ls", "--target", "Task:42", env=env)
    assert status == 1 and err.startswith("attachd ls: ") and "(unauthorized" in err
    (tmp_path / "a.txt").write_text("a")
    status, _, err = await attachd(
        "upload", str(tmp_path / "a.txt"), str(tmp_path / "a.txt"), "--target", "Task:42", "--name", "x", env=env
    )
    assert status == 1 and "--name names one file" in err
    status, _, err = await attachd("upload", str(tmp_path / "a.txt"), "--target", "Task", env=env)
    assert status == 2 and "TYPE:ID" in err
    assert await service.rows() == []
