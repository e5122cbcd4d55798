"""Client-supplied filenames made safe to store, to show and to send back."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

MAX_FILENAME_BYTES = 255

# Control (Cc), format (Cf: bidi overrides and isolates, LRM/RLM, zero-width
# characters, BOM, ...) and lone surrogates (Cs), which cannot even be encoded.
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})

# Windows refuses these as a name before the first dot, in any case ("con.tar.gz").
_RESERVED_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{n}" for port in ("COM", "LPT") for n in "123456789¹²³"}
)

_PATH_SEPARATORS = re.compile(r"[/\\]")

# RFC 5987 attr-char minus what quote() already leaves alone (letters, digits, "_.-~").
_ATTR_CHAR_SAFE = "!#$&+^`|"

_DISPOSITIONS = frozenset({"inline", "attachment"})


def sanitize_filename(name: str | None, *, fallback: str = "file") -> str:
    """Reduce ``name`` to a bare, printable filename of at most 255 UTF-8 bytes.

    Returns ``fallback`` when nothing usable is left.
    """
    if not name:
        return fallback
    # Drop before normalising: a removed zero-width character may sit between
    # a base letter and its combining mark, which NFC must then compose.
    name = "".join(ch for ch in name if unicodedata.category(ch) not in _DROPPED_CATEGORIES)
    name = unicodedata.normalize("NFC", name)
    name = _PATH_SEPARATORS.split(name)[-1]
    name = " ".join(name.split()).strip(" .")
    if not name:
        return fallback
    name = _cap(name)
    if _is_reserved(name):
        # _cap always keeps the first character, so the prefix survives re-capping.
        name = _cap("_" + name)
    return name


def extension_of(filename: str) -> str:
    """The final extension, lowercased and without its dot; "" when there is none."""
    stem, _, extension = filename.rpartition(".")
    return extension.lower() if stem else ""


def content_disposition(disposition: str, filename: str) -> str:
    """A ``Content-Disposition`` value (RFC 6266) for ``filename``, sanitized first.

    Plain ASCII names get only ``filename``; any other name also gets
    ``filename*`` (RFC 5987), which clients prefer, with an ASCII look-alike in
    ``filename`` for those that do not understand it.
    """
    if disposition not in _DISPOSITIONS:
        raise ValueError(f"disposition must be 'inline' or 'attachment', not {disposition!r}")
    filename = sanitize_filename(filename)
    fallback = "".join(ch if _is_plain_ascii(ch) else "_" for ch in filename)
    value = f'{disposition}; filename="{fallback}"'
    if fallback != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe=_ATTR_CHAR_SAFE)}"
    return value


def _cap(name: str) -> str:
    """Cut ``name`` to MAX_FILENAME_BYTES, sacrificing the stem to keep the extension."""
    if len(name.encode()) <= MAX_FILENAME_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    if stem:
        suffix = dot + extension
        head = _truncate(stem, MAX_FILENAME_BYTES - len(suffix.encode())).rstrip(" .")
        if head:
            return head + suffix
    # No extension, or one too long to be worth keeping.
    return _truncate(name, MAX_FILENAME_BYTES).rstrip(" .")


def _truncate(text: str, max_bytes: int) -> str:
    # "ignore" drops only the character cut in half at the end.
    return text.encode()[: max(max_bytes, 0)].decode(errors="ignore")


def _is_reserved(name: str) -> bool:
    return name.split(".", 1)[0].rstrip(" ").upper() in _RESERVED_NAMES


def _is_plain_ascii(ch: str) -> bool:
    # Quotes and backslashes would need quoted-pairs that clients handle
    # unevenly, and some clients percent-decode ``filename`` (RFC 6266 D).
    return " " <= ch <= "~" and ch not in '"\\%'
