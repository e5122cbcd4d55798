"""The media-type policy on its own: its lists agree with each other and with the sniffer."""

from __future__ import annotations

import struct

import pytest

from services.core import sniff as sniffing
from services.core.mediatypes import (
    ACTIVE_TYPES,
    DEFAULT_ALLOWED_EXTENSIONS,
    EXTENSION_FAMILIES,
    HEIF_TYPES,
    OCTET_STREAM,
    RASTER_IMAGE_TYPES,
    SNIFFED_TYPES,
    THUMBNAIL_LOADERS,
    THUMBNAIL_TYPES,
    TYPE_EXTENSIONS,
    VARIANT_EXTENSION,
    VARIANT_TYPE,
    disposition,
    is_active,
    is_raster_image,
    served_content_type,
    stored_content_type,
)


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    brands = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return struct.pack(">I", 8 + len(brands)) + b"ftyp" + brands


# One head of each type the sniffer knows.
HEADS = [
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a\x01\x00",
    b"RIFF\x24\x00\x00\x00WEBPVP8 ",
    _ftyp(b"heic", b"mif1"),
    _ftyp(b"avif", b"mif1"),
    b"II*\x00\x08\x00\x00\x00",
    b"BM" + struct.pack("<IHHI", 70, 0, 0, 54) + struct.pack("<Iii", 40, 2, 2),
    b'<svg xmlns="http://www.w3.org/2000/svg"></svg>',
    b"<html><body>hi</body></html>",
    b"<?xml version='1.0'?><note/>",
    b"hello, world\n",
    b"%PDF-1.7\n",
    b"PK\x03\x04\x14\x00",
    b"\x1f\x8b\x08\x00",
    b"7z\xbc\xaf\x27\x1c\x00\x04",
    b"Rar!\x1a\x07\x00",
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
    b"ID3\x04\x00",
    _ftyp(b"M4A ", b"mp42"),
    b"RIFF\x24\x00\x00\x00WAVEfmt ",
    _ftyp(b"isom", b"mp41"),
    _ftyp(b"qt  "),
    b"\x00\x01\x02\x03",
]


def test_sniffed_types_are_what_the_sniffer_returns() -> None:
    assert {sniffing.sniff(head) for head in HEADS} == SNIFFED_TYPES
    assert {mime for _, mime in sniffing._SIGNATURES} <= SNIFFED_TYPES
    assert set(sniffing._RIFF_FORMS.values()) <= SNIFFED_TYPES


def test_types_are_bare_and_lower_case() -> None:
    named = SNIFFED_TYPES | ACTIVE_TYPES | RASTER_IMAGE_TYPES | set(TYPE_EXTENSIONS) | {VARIANT_TYPE}
    for content_type in named:
        assert content_type == content_type.strip().lower() and ";" not in content_type


def test_images_nest_raster_within_sniffed_and_thumbnailable_within_raster() -> None:
    assert frozenset(THUMBNAIL_LOADERS) == THUMBNAIL_TYPES
    assert THUMBNAIL_TYPES <= RASTER_IMAGE_TYPES <= SNIFFED_TYPES
    assert HEIF_TYPES <= THUMBNAIL_TYPES
    assert all(content_type.startswith("image/") for content_type in RASTER_IMAGE_TYPES)
    assert all(loader.startswith("VipsForeignLoad") for loader in THUMBNAIL_LOADERS.values())


def test_no_active_type_is_inline_or_allowed() -> None:
    assert not ACTIVE_TYPES & RASTER_IMAGE_TYPES
    for content_type in ACTIVE_TYPES:
        assert disposition(content_type) == "attachment"
        assert served_content_type(content_type) == OCTET_STREAM
    for family in EXTENSION_FAMILIES.values():
        assert not family & ACTIVE_TYPES


def test_every_inert_sniffed_type_has_an_extension_and_nothing_else_does() -> None:
    in_families = frozenset().union(*EXTENSION_FAMILIES.values())
    assert in_families == SNIFFED_TYPES - ACTIVE_TYPES - {OCTET_STREAM}
    assert frozenset(EXTENSION_FAMILIES) == DEFAULT_ALLOWED_EXTENSIONS


def test_the_preferred_extension_of_a_type_accepts_it() -> None:
    assert set(TYPE_EXTENSIONS) >= RASTER_IMAGE_TYPES
    for content_type, extension in TYPE_EXTENSIONS.items():
        assert content_type in EXTENSION_FAMILIES[extension]


def test_variants_are_inline_images_with_their_own_extension() -> None:
    assert VARIANT_TYPE in THUMBNAIL_TYPES
    assert disposition(VARIANT_TYPE) == "inline"
    assert VARIANT_TYPE in EXTENSION_FAMILIES[VARIANT_EXTENSION]


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("text/html", True),
        ("TEXT/HTML", True),
        ("text/xml; charset=utf-8", True),
        (" application/javascript ", True),
        ("image/svg+xml", True),
        ("image/png", False),
        ("text/plain", False),
        ("application/pdf", False),
    ],
)
def test_is_active(content_type: str, expected: bool) -> None:
    assert is_active(content_type) is expected


@pytest.mark.parametrize(
    ("content_type", "served"),
    [
        ("text/xml; charset=utf-8", OCTET_STREAM),
        ("text/javascript", OCTET_STREAM),
        ("application/pdf", "application/pdf"),
        ("text/plain; charset=utf-8", "text/plain; charset=utf-8"),
        ("image/jpeg", "image/jpeg"),
    ],
)
def test_served_content_type(content_type: str, served: str) -> None:
    assert served_content_type(content_type) == served


@pytest.mark.parametrize("content_type", sorted(RASTER_IMAGE_TYPES))
def test_raster_images_are_inline(content_type: str) -> None:
    assert is_raster_image(content_type)
    assert disposition(content_type) == "inline"


@pytest.mark.parametrize("content_type", ["application/pdf", "text/plain", "video/mp4", OCTET_STREAM, "IMAGE/PNG"])
def test_everything_else_is_an_attachment(content_type: str) -> None:
    assert not is_raster_image(content_type)
    assert disposition(content_type) == "attachment"


@pytest.mark.parametrize(
    ("sniffed", "filename", "expected"),
    [
        ("image/png", "photo.png", "image/png"),
        ("image/heif", "photo.jpg", "image/heif"),  # an image is what its bytes say
        ("text/plain", "notes.txt", "text/plain"),
        ("text/plain", "table.csv", "text/csv"),
        ("text/plain", "notes.no-such-extension", "text/plain"),
        ("application/pdf", "report.pdf", "application/pdf"),
        (
            "application/zip",
            "report.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
    ],
)
def test_stored_content_type(sniffed: str, filename: str, expected: str) -> None:
    assert stored_content_type(sniffed, filename) == expected
