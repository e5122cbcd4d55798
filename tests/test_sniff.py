from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.errors import ApiError
from services.core.mediatypes import ACTIVE_TYPES, DEFAULT_ALLOWED_EXTENSIONS, EXTENSION_FAMILIES, is_raster_image
from services.core.sniff import check_content, sniff


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    brands = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return struct.pack(">I", 8 + len(brands)) + b"ftyp" + brands + b"\x00\x00\x00\x08free"


BMP_HEADER = b"BM" + struct.pack("<IHHI", 70, 0, 0, 54) + struct.pack("<Iii", 40, 2, 2)

SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"></svg>'


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
        (b"GIF87a\x01\x00\x01\x00", "image/gif"),
        (b"GIF89a\x01\x00\x01\x00", "image/gif"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
        (ftyp(b"heic", b"mif1", b"heic"), "image/heif"),
        (ftyp(b"mif1", b"heic"), "image/heif"),
        (ftyp(b"msf1", b"hevc"), "image/heif"),
        (ftyp(b"avif", b"mif1", b"avif", b"miaf"), "image/avif"),
        (ftyp(b"mif1", b"avif"), "image/avif"),
        (b"II*\x00\x08\x00\x00\x00", "image/tiff"),
        (b"MM\x00*\x00\x00\x00\x08", "image/tiff"),
        (BMP_HEADER, "image/bmp"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "application/pdf"),
        (b"PK\x03\x04\x14\x00\x06\x00", "application/zip"),
        (b"PK\x05\x06" + b"\x00" * 18, "application/zip"),
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00", "application/gzip"),
        (b"7z\xbc\xaf\x27\x1c\x00\x04", "application/x-7z-compressed"),
        (b"Rar!\x1a\x07\x00\xcf\x90", "application/vnd.rar"),
        (b"Rar!\x1a\x07\x01\x00\x33\x92", "application/vnd.rar"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00\x00", "application/x-ole-storage"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00", "audio/mpeg"),
        (b"\xff\xfb\x90\x64\x00\x00", "audio/mpeg"),  # MPEG-1 layer III frame, no tag
        (ftyp(b"isom", b"isom", b"iso2", b"mp41"), "video/mp4"),
        (ftyp(b"mp42", b"mp42", b"isom"), "video/mp4"),
        (ftyp(b"qt  ", b"qt  "), "video/quicktime"),
        (ftyp(b"M4A ", b"M4A ", b"mp42"), "audio/mp4"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "audio/wav"),
        (b"<?xml version='1.0'?>\n" + SVG, "image/svg+xml"),
        (SVG, "image/svg+xml"),
        (b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "x">\n' + SVG, "image/svg+xml"),
        (b"<?xml version='1.0'?><note><to>you</to></note>", "application/xml"),
        (b"<?xml version='1.0'?><html xmlns='http://www.w3.org/1999/xhtml'/>", "text/html"),
        (b"hello, world\r\n", "text/plain"),
        ("caf\u00e9 \u2603\tna\u00efve\n".encode(), "text/plain"),
        (b'{"json": [1, 2, 3]}', "text/plain"),
        (b"a,b,c\n1,2,3\n", "text/plain"),
        (b"{\\rtf1\\ansi\\deff0 {\\fonttbl}}", "text/plain"),
        (b"From: a@example.com\r\nSubject: hi\r\n\r\nbody", "text/plain"),
        (b"BMW owners club minutes\n", "text/plain"),  # "BM" alone is not a bitmap
        (b"", "text/plain"),
        (b"\x00\x01\x02\x03", "application/octet-stream"),
        (b"hello\x00world", "application/octet-stream"),
        (b"\x1b[31mred\x1b[0m", "text/plain"),  # a log with ANSI colours
        (b"caf\xe9;\x80 10", "text/plain"),  # Windows-1252, as spreadsheets export CSV
        ("name,size\r\n".encode("utf-16"), "text/plain"),
        (b"\xff\xfe<\x00h\x00t\x00m\x00l\x00>\x00", "text/html"),  # UTF-16 HTML is still HTML
        (b"text\x00with a NUL", "application/octet-stream"),
        (b"MZ\x90\x00\x03\x00\x00\x00", "application/octet-stream"),
    ],
)
def test_sniff(head: bytes, expected: str) -> None:
    assert sniff(head) == expected


@pytest.mark.parametrize(
    "head",
    [
        b"<!DOCTYPE html><title>x</title>",
        b"<!doctype HTML>",
        b"<html><body>hi</body></html>",
        b"<HTML>",
        b"<hTmL lang=en>",
        b"<html\nlang=en>",
        b"\xef\xbb\xbf<html>",
        b"  \t\r\n\x0c<script>alert(1)</script>",
        b"\xef\xbb\xbf\n\n<ScRiPt src=//evil.example/x.js></script>",
        b"<iframe src=//evil.example>",
        b"<body onload=alert(1)>",
        b"<head>",
        b"<div>",
        b"<a href=x>click</a>",
        b"<p>",
        b"<!-- comment -->",
        b"<!DOCTYPE\nhtml>",
    ],
)
def test_sniff_recognises_disguised_html(head: bytes) -> None:
    assert sniff(head) == "text/html"


@pytest.mark.parametrize("head", [b"<abbr>", b"<pre>x</pre>", b"<b-tag>", b"<3 cats"])
def test_sniff_html_patterns_need_a_terminator(head: bytes) -> None:
    assert sniff(head) == "text/plain"


def test_sniff_reads_only_the_head() -> None:
    assert sniff(b"a" * 4096 + b"\x00") == "text/plain"


def test_sniff_tolerates_a_character_cut_at_the_end_of_the_head() -> None:
    assert sniff(b"a" * 4095 + "\u00e9".encode()) == "text/plain"


@given(st.binary(max_size=64))
def test_sniff_never_fails(head: bytes) -> None:
    assert isinstance(sniff(head), str)


@given(
    prefix=st.sampled_from(["", "\ufeff"]),
    space=st.text(alphabet="\t\n\x0c\r ", max_size=8),
    tag=st.sampled_from(["<html>", "<script>", "<iframe ", "<!doctype html>", "<body>"]),
    flips=st.integers(min_value=0, max_value=2**16 - 1),
)
def test_sniff_finds_html_in_any_case(prefix: str, space: str, tag: str, flips: int) -> None:
    mixed = "".join(c.upper() if flips >> i & 1 else c for i, c in enumerate(tag))
    assert sniff((prefix + space + mixed).encode()) == "text/html"


@pytest.mark.parametrize(
    ("extension", "sniffed"),
    [
        ("jpg", "image/jpeg"),
        ("JPEG", "image/jpeg"),
        ("jfif", "image/jpeg"),
        ("png", "image/png"),
        ("heic", "image/heif"),
        ("heic", "image/avif"),
        ("avif", "image/avif"),
        ("tif", "image/tiff"),
        ("pdf", "application/pdf"),
        ("csv", "text/plain"),
        ("json", "text/plain"),
        ("rtf", "text/plain"),
        ("eml", "text/plain"),
        ("docx", "application/zip"),
        ("xls", "application/x-ole-storage"),
        ("mp3", "audio/mpeg"),
        ("mov", "video/quicktime"),
        ("mp4", "video/mp4"),
        ("m4a", "audio/mp4"),
        ("wav", "audio/wav"),
        ("7z", "application/x-7z-compressed"),
    ],
)
def test_check_content_accepts_matching_pairs(extension: str, sniffed: str) -> None:
    check_content(extension, sniffed, allowed=DEFAULT_ALLOWED_EXTENSIONS)


def test_html_named_jpg_is_a_content_mismatch() -> None:
    with pytest.raises(ApiError) as caught:
        html = sniff(b"<html><script>alert(1)</script>")
        check_content("jpg", html, allowed=DEFAULT_ALLOWED_EXTENSIONS)
    error = caught.value
    assert (error.code, error.field, error.status) == ("content_mismatch", "file", 400)
    assert error.message == "file content is text/html but the name ends in .jpg"


def test_jpeg_named_png_is_a_content_mismatch() -> None:
    with pytest.raises(ApiError) as caught:
        check_content("png", sniff(b"\xff\xd8\xff\xe0"), allowed=DEFAULT_ALLOWED_EXTENSIONS)
    assert caught.value.code == "content_mismatch"
    assert "image/jpeg" in caught.value.message


@pytest.mark.parametrize("extension", ["exe", "html", "htm", "svg", "xml", "js", ""])
def test_extension_not_allowed(extension: str) -> None:
    with pytest.raises(ApiError) as caught:
        check_content(extension, "text/plain", allowed=DEFAULT_ALLOWED_EXTENSIONS, field="name")
    error = caught.value
    assert (error.code, error.field, error.status) == ("invalid_extension", "name", 400)
    assert (f"extension .{extension} is" if extension else "without an extension") in error.message
    assert "pdf" in error.message  # says what is allowed


def test_extension_outside_the_configured_set_is_refused() -> None:
    with pytest.raises(ApiError) as caught:
        check_content("png", "image/png", allowed=frozenset({"pdf"}))
    assert caught.value.code == "invalid_extension"
    assert caught.value.field == "filename"


@pytest.mark.parametrize("extension", sorted(DEFAULT_ALLOWED_EXTENSIONS) + ["svg", "dat"])
def test_svg_never_passes(extension: str) -> None:
    allowed = DEFAULT_ALLOWED_EXTENSIONS | {"svg", "dat"}
    with pytest.raises(ApiError) as caught:
        check_content(extension, sniff(SVG), allowed=allowed)
    assert caught.value.code == "content_mismatch"


@pytest.mark.parametrize("sniffed", sorted(ACTIVE_TYPES))
def test_extension_added_by_operator_refuses_only_active_content(sniffed: str) -> None:
    allowed = DEFAULT_ALLOWED_EXTENSIONS | {"dat"}
    check_content("dat", "application/octet-stream", allowed=allowed)
    check_content("dat", "image/png", allowed=allowed)
    with pytest.raises(ApiError) as caught:
        check_content("dat", sniffed, allowed=allowed)
    assert caught.value.code == "content_mismatch"


def test_default_extensions_are_inert() -> None:
    assert frozenset(EXTENSION_FAMILIES) == DEFAULT_ALLOWED_EXTENSIONS
    assert not {"html", "htm", "svg", "xml", "js", "exe", "xhtml"} & DEFAULT_ALLOWED_EXTENSIONS
    assert all(extension == extension.lower() for extension in DEFAULT_ALLOWED_EXTENSIONS)
    for family in EXTENSION_FAMILIES.values():
        assert not family & ACTIVE_TYPES


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("image/jpeg", True),
        ("image/png", True),
        ("image/gif", True),
        ("image/webp", True),
        ("image/heif", True),
        ("image/avif", True),
        ("image/tiff", True),
        ("image/bmp", True),
        ("image/svg+xml", False),
        ("text/html", False),
        ("application/pdf", False),
        ("video/mp4", False),
    ],
)
def test_is_raster_image(content_type: str, expected: bool) -> None:
    assert is_raster_image(content_type) is expected
