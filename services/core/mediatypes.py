"""The media-type policy: what attachd does with each kind of file, in one place.

Which types are active content (refused on upload, never served as what they are), which are
raster images (served inline; most get thumbnail variants, each read by one libvips loader),
which sniffed types each allowed extension may hold, the extension a nameless file gets, and
the content type a stored file is recorded and served with.

Pure data and functions. :mod:`services.core.sniff` detects the type from the bytes and applies
the extension families; :mod:`services.query.downloads`, :mod:`workers.media` and
:mod:`workers.ingest` apply the rest.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

OCTET_STREAM = "application/octet-stream"

# Raster images: the only types served inline; everything else is an attachment.
RASTER_IMAGE_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "image/heif",
        "image/avif",
        "image/tiff",
        "image/bmp",
    }
)

# Every type services.core.sniff.sniff can return.
SNIFFED_TYPES = RASTER_IMAGE_TYPES | frozenset(
    {
        "image/svg+xml",
        "text/html",
        "application/xml",
        "text/plain",
        "application/pdf",
        "application/zip",
        "application/gzip",
        "application/x-7z-compressed",
        "application/vnd.rar",
        "application/x-ole-storage",
        "audio/mpeg",
        "audio/mp4",
        "audio/wav",
        "video/mp4",
        "video/quicktime",
        OCTET_STREAM,
    }
)

# A browser may execute or render these as a document if it is ever shown them as what they are,
# whatever the file's name: an upload that sniffs as one is refused, and a stored file whose
# content type is one (an operator's extra extension can name it) is served as OCTET_STREAM.
ACTIVE_TYPES = frozenset(
    {
        "text/html",
        "image/svg+xml",
        "application/xml",
        "text/xml",
        "application/xhtml+xml",
        "application/javascript",
        "text/javascript",
    }
)

# HEIF containers: libvips cannot shrink them on load, and this build may lack their codec
# (HEVC in iPhone photos), in which case the file is kept without variants.
HEIF_TYPES = frozenset({"image/heif", "image/avif"})

# The raster types that get thumbnail variants, and the libvips loader (base class) that reads
# each; every other loader stays blocked. BMP is served inline but gets no variants.
THUMBNAIL_LOADERS: Mapping[str, str] = MappingProxyType(
    {
        "image/jpeg": "VipsForeignLoadJpeg",
        "image/png": "VipsForeignLoadPng",
        "image/webp": "VipsForeignLoadWebp",
        "image/gif": "VipsForeignLoadNsgif",
        "image/heif": "VipsForeignLoadHeif",
        "image/avif": "VipsForeignLoadHeif",
        "image/tiff": "VipsForeignLoadTiff",
    }
)
THUMBNAIL_TYPES = frozenset(THUMBNAIL_LOADERS)

# The variants (thumbnail, small) are JPEGs.
VARIANT_TYPE = "image/jpeg"

# Each allowed extension and the sniffed types its content may have.
_JPEG = frozenset({"image/jpeg"})
_TIFF = frozenset({"image/tiff"})
_TEXT = frozenset({"text/plain"})
_ZIP = frozenset({"application/zip"})
_OLE = frozenset({"application/x-ole-storage"})
_MP4 = frozenset({"video/mp4", "video/quicktime", "audio/mp4"})

EXTENSION_FAMILIES: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "jpg": _JPEG,
        "jpeg": _JPEG,
        "jfif": _JPEG,
        "png": frozenset({"image/png"}),
        "gif": frozenset({"image/gif"}),
        "webp": frozenset({"image/webp"}),
        "heic": HEIF_TYPES,
        "heif": HEIF_TYPES,
        "avif": HEIF_TYPES,
        "tif": _TIFF,
        "tiff": _TIFF,
        "bmp": frozenset({"image/bmp"}),
        "pdf": frozenset({"application/pdf"}),
        "txt": _TEXT,
        "csv": _TEXT,
        "md": _TEXT,
        "log": _TEXT,
        "json": _TEXT,
        "eml": _TEXT,
        "rtf": _TEXT,
        "docx": _ZIP,
        "xlsx": _ZIP,
        "pptx": _ZIP,
        "odt": _ZIP,
        "ods": _ZIP,
        "odp": _ZIP,
        "zip": _ZIP,
        "doc": _OLE,
        "xls": _OLE,
        "ppt": _OLE,
        "msg": _OLE,
        "mp3": frozenset({"audio/mpeg"}),
        "mp4": _MP4,
        "mov": _MP4,
        "m4a": _MP4,
        "wav": frozenset({"audio/wav"}),
        "gz": frozenset({"application/gzip"}),
        "7z": frozenset({"application/x-7z-compressed"}),
        "rar": frozenset({"application/vnd.rar"}),
    }
)

# The extensions allowed unless ATTACHD_ALLOWED_EXTENSIONS says otherwise.
DEFAULT_ALLOWED_EXTENSIONS = frozenset(EXTENSION_FAMILIES)

# Preferred extension for a sniffed type, for bytes that arrive with no file name.
TYPE_EXTENSIONS: Mapping[str, str] = MappingProxyType(
    {
        "image/jpeg": "jpg",
        "image/png": "png",
        "image/gif": "gif",
        "image/webp": "webp",
        "image/heif": "heic",
        "image/avif": "avif",
        "image/tiff": "tiff",
        "image/bmp": "bmp",
        "application/pdf": "pdf",
        "text/plain": "txt",
        "application/zip": "zip",
        "application/gzip": "gz",
        "audio/mpeg": "mp3",
        "video/mp4": "mp4",
        "audio/wav": "wav",
    }
)

VARIANT_EXTENSION = TYPE_EXTENSIONS[VARIANT_TYPE]


def is_raster_image(content_type: str) -> bool:
    return content_type in RASTER_IMAGE_TYPES


def is_active(content_type: str) -> bool:
    """Whether a content type (parameters and case aside) is active content."""
    return content_type.split(";")[0].strip().lower() in ACTIVE_TYPES


def stored_content_type(sniffed: str, filename: str) -> str:
    """The content type a stored file is recorded with, from its sniffed type and its (checked) name.

    The sniffed type already agrees with the extension's family; the extension names the member
    (a .docx sniffs as zip, a .csv as text). An image is what its bytes say.
    """
    if sniffed.startswith("image/"):
        return sniffed
    return mimetypes.guess_type(filename, strict=False)[0] or sniffed


def served_content_type(content_type: str) -> str:
    """The Content-Type a stored file is served with: its own, unless that is active content."""
    return OCTET_STREAM if is_active(content_type) else content_type


def disposition(content_type: str) -> Literal["inline", "attachment"]:
    """Raster images are shown inline; everything else is downloaded as an attachment."""
    return "inline" if content_type in RASTER_IMAGE_TYPES else "attachment"
