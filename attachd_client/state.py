"""What ``attachd upload`` remembers between runs, so that the run after one that was stopped half-way
resumes the uploads it began (from the URL of each resumable upload) and leaves alone the files it finished
(by the id of their attachment), instead of starting over.

One JSON file, ``$XDG_STATE_HOME/attachd/uploads.json`` (``~/.local/state/attachd/uploads.json``), maps a
key naming the file as it was (its path, size and modification time) and where it went (the attachd and
the target) to ``{"url"}`` or ``{"attachment_id"}``. A file changed since is a new key, so a new upload.
Entries are kept for a week.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

KEEP_S = 7 * 24 * 3600  # longer than attachd keeps an unfinished upload (ATTACHD_TUS_EXPIRY_S, a day)


def state_dir(environ: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "attachd"


def upload_key(server: str, target: str, path: Path, size: int, mtime_ns: int) -> str:
    """The key of one file's upload: the same file, unchanged, to the same place gets the same key."""
    named = orjson.dumps([server.rstrip("/"), target, str(path.resolve()), size, mtime_ns])
    return hashlib.sha256(named).hexdigest()


class ResumeState:
    """The remembered uploads. Every change re-reads the file and replaces it whole (a temporary file
    renamed over it), so runs side by side lose at most each other's latest entry, never the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, Any]:
        try:
            entries = orjson.loads(self.path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return {}
        return entries if isinstance(entries, dict) else {}

    def _field(self, key: str, name: str) -> str | None:
        entry = self._read().get(key)
        value = entry.get(name) if isinstance(entry, dict) else None
        return value if isinstance(value, str) else None

    def url(self, key: str) -> str | None:
        """The URL of the resumable upload begun for this key."""
        return self._field(key, "url")

    def attachment_id(self, key: str) -> str | None:
        """The attachment this key's file became."""
        return self._field(key, "attachment_id")

    def uploading(self, key: str, url: str, path: Path) -> None:
        self._change(key, {"url": url, "path": str(path.resolve()), "saved_at": time.time()})

    def uploaded(self, key: str, attachment_id: str, path: Path) -> None:
        self._change(key, {"attachment_id": attachment_id, "path": str(path.resolve()), "saved_at": time.time()})

    def forget(self, key: str) -> None:
        self._change(key, None)

    def _change(self, key: str, entry: dict[str, Any] | None) -> None:
        now = time.time()
        entries = {
            k: v for k, v in self._read().items() if isinstance(v, dict) and now - float(v.get("saved_at", 0)) < KEEP_S
        }
        if entry is None:
            entries.pop(key, None)
        else:
            entries[key] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.path.parent, prefix=".uploads.", delete=False) as file:
            file.write(orjson.dumps(entries, option=orjson.OPT_INDENT_2))
        os.replace(file.name, self.path)
