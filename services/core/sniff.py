"""What an upload really is, judged from its first bytes, and whether its name agrees.

Pure functions over bytes and strings; no I/O. :func:`sniff` looks at the first
:data:`SNIFF_BYTES` bytes; :func:`check_content` refuses a file whose extension is
not allowed or whose content does not belong to the extension's family. What each
type may do is :mod:`services.core.mediatypes`' policy.
"""

from __future__ import annotations

import codecs
import re
import struct

from services.core.errors import ApiError
from services.core.mediatypes import ACTIVE_TYPES, EXTENSION_FAMILIES, OCTET_STREAM

SNIFF_BYTES = 4096

# Fixed signatures at offset 0, most specific first.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"II+\x00", "image/tiff"),  # BigTIFF
    (b"MM\x00+", "image/tiff"),
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"PK\x05\x06", "application/zip"),  # empty archive
    (b"PK\x07\x08", "application/zip"),  # spanned archive
    (b"\x1f\x8b\x08", "application/gzip"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"Rar!\x1a\x07\x00", "application/vnd.rar"),
    (b"Rar!\x1a\x07\x01\x00", "application/vnd.rar"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage"),
    (b"ID3", "audio/mpeg"),
)

# RIFF containers: the form type at offset 8.
_RIFF_FORMS = {b"WEBP": "image/webp", b"WAVE": "audio/wav"}

# ISO-BMFF (`ftyp` box) brands. Image brands win over video ones: a HEIF file
# may also list generic brands, and an AVIF file usually lists mif1 too.
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})
_AUDIO_MP4_BRANDS = frozenset({b"M4A ", b"M4B ", b"M4P "})
_QUICKTIME_BRAND = b"qt  "

# BITMAPINFOHEADER and its relatives; "BM" alone is too weak (text can start with it).
_BMP_DIB_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})

_WHITESPACE = "\t\n\x0c\r "
# WHATWG MIME Sniffing's HTML patterns ("identifying a resource with an unknown
# MIME type"), with a wider set of terminators: "<html\n" is HTML to a browser too.
_HTML_TAGS = (
    "<!doctype html", "<html", "<head", "<script", "<iframe", "<h1", "<div", "<font",
    "<table", "<a", "<style", "<title", "<b", "<body", "<br", "<p", "<!--",
)  # fmt: skip
_TAG_TERMINATORS = frozenset({"", " ", "\t", "\n", "\x0c", "\r", ">", "/"})
_XML_ROOT = re.compile(r"<(?:!doctype\s+)?(svg|html)[\s>:/]")
# Text must not contain C0 controls (other than \t \n \f \r), DEL or C1 controls.
# WHATWG's "binary data bytes": ESC (ANSI colours in logs) and 8-bit text stay text.
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f]")


def sniff(head: bytes) -> str:
    """Return the MIME type of a file from its first bytes (up to :data:`SNIFF_BYTES`)."""
    head = head[:SNIFF_BYTES]
    for signature, mime in _SIGNATURES:
        if head.startswith(signature):
            return mime
    return (
        _sniff_riff(head)
        or _sniff_iso_bmff(head)
        or _sniff_bmp(head)
        # FF FE is both the UTF-16 byte order mark and an MPEG audio sync word.
        or (_sniff_text(head) if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else None)
        or _sniff_mpeg_audio(head)
        or _sniff_text(head)
        or OCTET_STREAM
    )


def _sniff_riff(head: bytes) -> str | None:
    if head[:4] != b"RIFF":
        return None
    return _RIFF_FORMS.get(head[8:12])


def _sniff_iso_bmff(head: bytes) -> str | None:
    if head[4:8] != b"ftyp":
        return None
    (box_size,) = struct.unpack(">I", head[:4])
    major = head[8:12]
    # The major brand, then (after the 4-byte minor version) the compatible brands.
    brands = {major, *(head[i : i + 4] for i in range(16, min(box_size, len(head)) - 3, 4))}
    if brands & _AVIF_BRANDS:
        return "image/avif"
    if brands & _HEIF_BRANDS:
        return "image/heif"
    if major in _AUDIO_MP4_BRANDS:
        return "audio/mp4"
    if major == _QUICKTIME_BRAND:
        return "video/quicktime"
    return "video/mp4"


def _sniff_bmp(head: bytes) -> str | None:
    if head[:2] != b"BM" or len(head) < 18:
        return None
    (dib_header_size,) = struct.unpack("<I", head[14:18])
    return "image/bmp" if dib_header_size in _BMP_DIB_HEADER_SIZES else None


def _sniff_mpeg_audio(head: bytes) -> str | None:
    """An MPEG audio frame header without an ID3 tag: sync bits, a layer, a bitrate."""
    if len(head) < 3 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    version, layer, bitrate = (head[1] >> 3) & 3, (head[1] >> 1) & 3, head[2] >> 4
    if version == 1 or layer == 0 or bitrate == 0xF:  # reserved values
        return None
    return "audio/mpeg"


def _decode_text(head: bytes) -> str:
    """The head as text, if it is text: UTF-8, UTF-16 with a BOM, or a legacy 8-bit encoding
    (a Windows-1252 CSV from a spreadsheet is text too)."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return head[2 : len(head) - len(head) % 2].decode("utf-16-le" if head[0] == 0xFF else "utf-16-be", "replace")
    # A full head may have cut the file in the middle of a multi-byte character.
    whole_file = len(head) < SNIFF_BYTES
    try:
        return codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=whole_file)
    except UnicodeDecodeError:
        return head.decode("latin-1")


def _sniff_text(head: bytes) -> str | None:
    text = _decode_text(head)
    if _CONTROL_CHARS.search(text):
        return None
    return _sniff_markup(text.lstrip(_WHITESPACE).lower()) or "text/plain"


def _sniff_markup(text: str) -> str | None:
    """Recognise HTML, SVG and other XML at the start of (lower-cased) text."""
    for tag in _HTML_TAGS:
        if text.startswith(tag) and text[len(tag) : len(tag) + 1] in _TAG_TERMINATORS:
            return "text/html"
    if text.startswith(("<?xml", "<!doctype", "<svg")):
        root = _XML_ROOT.search(text)
        if root is None:
            return "application/xml"
        return "image/svg+xml" if root.group(1) == "svg" else "text/html"
    return None


def check_extension(extension: str, *, allowed: frozenset[str], field: str = "filename") -> None:
    """Refuse a name whose extension (its final suffix, without the dot) is not allowed: before any byte
    arrives when the name is known first (a tus upload's metadata), else with the content."""
    extension = extension.lower()
    if not extension or extension not in allowed:
        named = f"the extension .{extension} is" if extension else "a file without an extension is"
        raise ApiError(
            "invalid_extension",
            f"{named} not allowed; allowed: {', '.join(sorted(allowed))}",
            field=field,
            status=400,
        )


def check_content(extension: str, sniffed: str, *, allowed: frozenset[str], field: str = "filename") -> None:
    """Refuse a file whose extension is not allowed or does not match its content.

    ``extension`` is the name's final suffix, without the dot. An allowed extension
    with no known family (an operator's addition) accepts any inert content.
    """
    extension = extension.lower()
    check_extension(extension, allowed=allowed, field=field)
    family = EXTENSION_FAMILIES.get(extension)
    if sniffed in ACTIVE_TYPES or (family is not None and sniffed not in family):
        raise ApiError(
            "content_mismatch",
            f"file content is {sniffed} but the name ends in .{extension}",
            field="file",
            status=400,
        )
