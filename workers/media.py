"""Image thumbnails with libvips.

Everything here is synchronous and CPU-bound: call it from a thread pool, never
on the event loop. Call :func:`configure_vips` once when the worker starts.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import platform
import threading
from dataclasses import dataclass

import pyvips

from services.core.errors import ApiError
from services.core.mediatypes import HEIF_TYPES, THUMBNAIL_LOADERS, THUMBNAIL_TYPES
from services.core.settings import Settings

THUMBNAIL = (72, 48)
SMALL = (161, 107)

# Loader base classes, those of the types that get variants: unblocking one unblocks its file, buffer
# and source variants. libvips ignores a misspelt name, so tests check each exists. UltraHDR JPEGs
# (VipsForeignLoadUhdr) stay blocked and are read by the plain JPEG loader.
ALLOWED_LOADERS = tuple(dict.fromkeys(THUMBNAIL_LOADERS.values()))

_FAIL_ON = "error"  # refuse truncated or corrupt data, tolerate mere warnings
_JPEG_OPTIONS = {"Q": 82, "optimize_coding": True, "interlace": False, "keep": "none"}
_WHITE = [255, 255, 255]
_ROTATED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations that swap the axes
_CACHE_MAX_OPERATIONS = 100
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8  # glibc <malloc.h>
# The decode memory a worker process may have in flight by default (ATTACHD_DECODE_BUDGET_BYTES).
DECODE_BUDGET_BYTES = Settings.decode_budget_bytes
# What a decode that shrinks as it reads holds at most, as far as the budget is concerned.
SHRINKING_DECODE_BYTES = 16 << 20


@dataclass(frozen=True)
class MediaResult:
    width: int | None
    height: int | None
    thumbnail: bytes | None
    small: bytes | None


NO_MEDIA = MediaResult(None, None, None, None)


def configure_vips(
    *, cache_max_mem: int = 0, bound_malloc: bool = True, decode_budget_bytes: int = DECODE_BUDGET_BYTES
) -> None:
    """Allow only the expected image loaders, bound libvips' caches, the decode memory in flight and
    (``bound_malloc``) glibc's heap.

    ``cache_max_mem`` is the operation cache's budget in bytes; 0 disables the cache.
    Safe to call more than once, but not while images are being decoded.
    """
    global _decode_budget
    if bound_malloc:
        _bound_malloc()
    _decode_budget = DecodeBudget(decode_budget_bytes)
    pyvips.block_untrusted_set(True)
    pyvips.operation_block_set("VipsForeignLoad", True)
    for loader in ALLOWED_LOADERS:
        pyvips.operation_block_set(loader, False)
    # A cached operation keeps its input file open: a deleted upload would
    # keep its disk space until evicted.
    pyvips.cache_set_max_files(0)
    pyvips.cache_set_max_mem(cache_max_mem)
    pyvips.cache_set_max(_CACHE_MAX_OPERATIONS if cache_max_mem else 0)


def _bound_malloc() -> None:
    """Return libvips' freed pixel buffers to the kernel: without this the worker's RSS creeps up image
    after image (270 -> 300 MB over three passes of the corpus; 234 MB with it, bench/RESULTS.md).

    glibc raises its mmap threshold (up to 32 MiB) each time a large mmapped block is freed, so later
    decode buffers come from the heap arenas, fragment them and are never given back. Pinning the
    threshold at its starting value stops that; the arenas are capped as MALLOC_ARENA_MAX=2 would.
    Set here, not in the environment, so every way of starting a worker gets it. A no-op off glibc.
    """
    if platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL(None)
    libc.mallopt(_M_ARENA_MAX, 2)
    libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)


def image_dimensions(path: str) -> tuple[int, int] | None:
    """Width and height of an image as displayed (EXIF rotation applied), from its header.

    ``None`` if no allowed loader can read it.
    """
    try:
        return _displayed_size(_open_header(path))
    except pyvips.Error:
        return None


def make_variants(path: str, content_type: str, *, max_pixels: int) -> MediaResult:
    """Measure an image and make its :data:`SMALL` and :data:`THUMBNAIL` JPEGs.

    Content types libvips is not meant to transform give :data:`NO_MEDIA`.
    Raises :class:`ApiError` ``image_too_large`` (checked on the header, before
    any pixels are decoded) or ``invalid_image`` if the image cannot be decoded.
    """
    if content_type not in THUMBNAIL_TYPES:
        return NO_MEDIA
    width = height = None
    try:
        header = _open_header(path)
        width, height = _displayed_size(header)
        if width * height > max_pixels:
            raise ApiError(
                "image_too_large",
                f"image is {width}x{height} pixels; the limit is {max_pixels}",
                field="file",
                status=422,
            )
        with _decode_budget.reserve(decode_bytes(header, content_type)):
            small = _decode_small(path)
        thumbnail = small.thumbnail_image(THUMBNAIL[0], height=THUMBNAIL[1], crop="centre")
        return MediaResult(
            width,
            height,
            thumbnail=thumbnail.jpegsave_buffer(**_JPEG_OPTIONS),
            small=small.jpegsave_buffer(**_JPEG_OPTIONS),
        )
    except pyvips.Error as exc:
        if content_type in HEIF_TYPES:
            # This libvips build may lack the codec (HEVC in iPhone photos): keep the file, no variants.
            return MediaResult(width, height, None, None)
        raise ApiError(
            "invalid_image",
            f"the image could not be decoded: {_reason(exc, path)}",
            field="file",
            status=422,
        ) from None


def decode_bytes(header: pyvips.Image, content_type: str) -> int:
    """The memory decoding this image will hold, from its header.

    Progressive JPEG: 2 bytes of DCT coefficient per sample, whatever the output size. HEIF/AVIF: no
    shrink-on-load; libheif's planes, its RGB output and libvips' copy come to about 15 bytes a pixel (a
    12-MP AVIF peaks 185 MB above the worker's baseline). Anything else shrinks as it reads.
    """
    if content_type in HEIF_TYPES:
        return header.width * header.height * 15
    if content_type == "image/jpeg" and header.get_typeof("interlaced") and header.get("interlaced"):
        return header.width * header.height * header.bands * 2
    return SHRINKING_DECODE_BYTES


class DecodeBudget:
    """Decodes run side by side while their memory fits the budget; one larger than it runs alone.

    First come, first served: a decode that does not fit yet holds back those behind it, so a stream of
    small photos cannot starve a large one.
    """

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._in_use = 0
        self._waiting: collections.deque[object] = collections.deque()
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, nbytes: int):
        nbytes = min(nbytes, self._budget)  # more than the whole budget: waits for an idle process
        turn = object()
        with self._changed:
            self._waiting.append(turn)
            self._changed.wait_for(lambda: self._waiting[0] is turn and self._in_use + nbytes <= self._budget)
            self._waiting.popleft()
            self._in_use += nbytes
            self._changed.notify_all()  # the next in line may fit as well
        try:
            yield
        finally:
            with self._changed:
                self._in_use -= nbytes
                self._changed.notify_all()


_decode_budget = DecodeBudget(DECODE_BUDGET_BYTES)


def _decode_small(path: str) -> pyvips.Image:
    # One decode, shrunk on load, into memory; the thumbnail is cut from this small variant.
    decoded = pyvips.Image.thumbnail(path, SMALL[0], height=SMALL[1], crop="centre", fail_on=_FAIL_ON)
    return _flatten_to_srgb(decoded).copy_memory()


def _open_header(path: str) -> pyvips.Image:
    # Lazy: reads the header only; pixels are decoded when something needs them.
    return pyvips.Image.new_from_file(path, access="sequential", fail_on=_FAIL_ON)


def _displayed_size(image: pyvips.Image) -> tuple[int, int]:
    has_orientation = image.get_typeof("orientation") != 0
    if has_orientation and image.get("orientation") in _ROTATED_ORIENTATIONS:
        return image.height, image.width
    return image.width, image.height


def _flatten_to_srgb(image: pyvips.Image) -> pyvips.Image:
    """Three 8-bit sRGB bands, whatever came in (CMYK, 16-bit, greyscale, alpha)."""
    if image.interpretation != "srgb":
        image = image.colourspace("srgb")
    if image.hasalpha():
        image = image.flatten(background=_WHITE)
    return image.cast("uchar") if image.format != "uchar" else image


def _reason(exc: pyvips.Error, path: str) -> str:
    """The most specific line of libvips' error log, without our temporary path."""
    lines = [line for line in (exc.detail or exc.message).splitlines() if line.strip()]
    reason = lines[-1] if lines else exc.message
    return reason.replace(path, "file").strip()[:200]
