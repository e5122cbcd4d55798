from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import pyvips

from services.core.errors import ApiError
from services.core.sniff import sniff
from workers import media
from workers.media import (
    ALLOWED_LOADERS,
    NO_MEDIA,
    SMALL,
    THUMBNAIL,
    DecodeBudget,
    MediaResult,
    configure_vips,
    decode_bytes,
    image_dimensions,
    make_variants,
)

MAX_PIXELS = 50_000_000
HAS_HEIFSAVE = bool(pyvips.type_find("VipsOperation", "heifsave"))

Writer = Callable[[pyvips.Image, Path], None]


@pytest.fixture(scope="module", autouse=True)
def _configured_vips() -> None:
    configure_vips()


def gradient(width: int, height: int) -> pyvips.Image:
    """An sRGB image with detail everywhere, so that every crop is different."""
    xyz = pyvips.Image.xyz(width, height)
    red = xyz[0] * 255 / width
    green = xyz[1] * 255 / height
    blue = (xyz[0] + xyz[1]) % 256
    return red.bandjoin([green, blue]).cast("uchar").copy(interpretation="srgb")


def solid(width: int, height: int, rgb: list[int]) -> pyvips.Image:
    return (pyvips.Image.black(width, height, bands=3) + rgb).cast("uchar").copy(interpretation="srgb")


def save(path: Path, image: pyvips.Image) -> Path:
    image.write_to_file(str(path))
    return path


def assert_variants(result: MediaResult) -> None:
    for data, size in ((result.small, SMALL), (result.thumbnail, THUMBNAIL)):
        assert data is not None and data.startswith(b"\xff\xd8\xff")
        variant = pyvips.Image.new_from_buffer(data, "")
        assert (variant.width, variant.height) == size
        assert variant.get("vips-loader") == "jpegload_buffer"
        assert (variant.bands, variant.interpretation) == (3, "srgb")


def _jpeg(image: pyvips.Image, path: Path) -> None:
    image.jpegsave(str(path), interlace=False)


def _progressive_jpeg(image: pyvips.Image, path: Path) -> None:
    image.jpegsave(str(path), interlace=True)


def _cmyk_jpeg(image: pyvips.Image, path: Path) -> None:
    cmyk = image.colourspace("cmyk")
    assert (cmyk.bands, cmyk.interpretation) == (4, "cmyk")
    cmyk.jpegsave(str(path))


def _grey_jpeg(image: pyvips.Image, path: Path) -> None:
    image.colourspace("b-w").jpegsave(str(path))


def _png(image: pyvips.Image, path: Path) -> None:
    image.pngsave(str(path))


def _png_with_alpha(image: pyvips.Image, path: Path) -> None:
    image.bandjoin(128).pngsave(str(path))


def _png_16_bit(image: pyvips.Image, path: Path) -> None:
    (image.cast("ushort") * 257).cast("ushort").copy(interpretation="rgb16").pngsave(str(path))


def _webp(image: pyvips.Image, path: Path) -> None:
    image.webpsave(str(path))


def _gif(image: pyvips.Image, path: Path) -> None:
    image.gifsave(str(path))


def _tiff(image: pyvips.Image, path: Path) -> None:
    image.tiffsave(str(path))


def _avif(image: pyvips.Image, path: Path) -> None:
    # The bundled libheif encodes AV1 only (no HEVC), so this is the HEIF we can make.
    image.heifsave(str(path), compression="av1", effort=0)


_needs_heifsave = pytest.mark.skipif(not HAS_HEIFSAVE, reason="libvips was built without heifsave")


@pytest.mark.parametrize(
    ("width", "height", "content_type", "write"),
    [
        pytest.param(1200, 800, "image/jpeg", _jpeg, id="jpeg-baseline"),
        pytest.param(1200, 800, "image/jpeg", _progressive_jpeg, id="jpeg-progressive"),
        pytest.param(800, 1200, "image/jpeg", _jpeg, id="jpeg-portrait"),
        pytest.param(3000, 300, "image/jpeg", _jpeg, id="jpeg-very-wide"),
        pytest.param(300, 3000, "image/jpeg", _jpeg, id="jpeg-very-tall"),
        pytest.param(640, 480, "image/jpeg", _cmyk_jpeg, id="jpeg-cmyk"),
        pytest.param(640, 480, "image/jpeg", _grey_jpeg, id="jpeg-greyscale"),
        pytest.param(640, 480, "image/png", _png, id="png"),
        pytest.param(640, 480, "image/png", _png_with_alpha, id="png-alpha"),
        pytest.param(640, 480, "image/png", _png_16_bit, id="png-16-bit"),
        pytest.param(40, 30, "image/png", _png, id="png-smaller-than-variants"),
        pytest.param(640, 480, "image/webp", _webp, id="webp"),
        pytest.param(320, 240, "image/gif", _gif, id="gif"),
        pytest.param(640, 480, "image/tiff", _tiff, id="tiff"),
        pytest.param(640, 480, "image/avif", _avif, id="heif-avif", marks=_needs_heifsave),
    ],
)
def test_variants_are_exact_size_jpegs(
    tmp_path: Path, width: int, height: int, content_type: str, write: Writer
) -> None:
    path = tmp_path / "upload"
    write(gradient(width, height), path)
    assert sniff(path.read_bytes()[:4096]) == content_type

    result = make_variants(str(path), content_type, max_pixels=MAX_PIXELS)

    assert (result.width, result.height) == (width, height)
    assert_variants(result)


def test_transparency_is_flattened_onto_white(tmp_path: Path) -> None:
    path = save(tmp_path / "clear.png", solid(300, 200, [0, 0, 0]).bandjoin(0))

    result = make_variants(str(path), "image/png", max_pixels=MAX_PIXELS)

    assert result.small is not None
    assert pyvips.Image.new_from_buffer(result.small, "").min() >= 250


def test_sixteen_bit_colours_survive(tmp_path: Path) -> None:
    deep = (solid(300, 200, [200, 100, 50]).cast("ushort") * 257).cast("ushort")
    path = save(tmp_path / "deep.png", deep.copy(interpretation="rgb16"))
    assert pyvips.Image.new_from_file(str(path)).format == "ushort"

    result = make_variants(str(path), "image/png", max_pixels=MAX_PIXELS)

    assert result.small is not None
    small = pyvips.Image.new_from_buffer(result.small, "")
    assert [small[band].avg() for band in range(3)] == pytest.approx([200, 100, 50], abs=3)


def test_exif_orientation_is_applied_to_the_reported_size(tmp_path: Path) -> None:
    image = gradient(1200, 800)
    image.set_type(pyvips.GValue.gint_type, "orientation", 6)
    path = save(tmp_path / "rotated.jpg", image)

    result = make_variants(str(path), "image/jpeg", max_pixels=MAX_PIXELS)

    assert (result.width, result.height) == (800, 1200)
    assert image_dimensions(str(path)) == (800, 1200)
    assert_variants(result)


def test_variants_carry_no_metadata(tmp_path: Path) -> None:
    image = gradient(640, 480)
    image.set_type(pyvips.GValue.gstr_type, "exif-ifd3-GPSLatitudeRef", "N")
    image.set_type(pyvips.GValue.gstr_type, "exif-ifd3-GPSLatitude", "51/1 30/1 0/1")
    path = save(tmp_path / "located.jpg", image)
    source_fields = pyvips.Image.new_from_file(str(path)).get_fields()
    assert {"exif-data", "exif-ifd3-GPSLatitude"} <= set(source_fields)

    result = make_variants(str(path), "image/jpeg", max_pixels=MAX_PIXELS)

    for data in (result.small, result.thumbnail):
        assert data is not None
        fields = pyvips.Image.new_from_buffer(data, "").get_fields()
        assert not [name for name in fields if name.startswith(("exif", "xmp", "iptc", "icc"))]


def test_animated_gif_uses_the_first_frame(tmp_path: Path) -> None:
    red, blue = solid(300, 200, [255, 0, 0]), solid(300, 200, [0, 0, 255])
    animation = pyvips.Image.arrayjoin([red, blue], across=1)
    animation.set_type(pyvips.GValue.gint_type, "page-height", 200)
    path = save(tmp_path / "animated.gif", animation)

    result = make_variants(str(path), "image/gif", max_pixels=MAX_PIXELS)

    assert (result.width, result.height) == (300, 200)
    assert result.small is not None
    small = pyvips.Image.new_from_buffer(result.small, "")
    assert small[0].avg() > 200 and small[2].avg() < 50


@pytest.mark.skipif(not pyvips.type_find("VipsOperation", "uhdrsave"), reason="libvips was built without UltraHDR")
def test_ultrahdr_jpeg_is_read_by_the_plain_jpeg_loader(tmp_path: Path) -> None:
    path = tmp_path / "hdr.jpg"
    gradient(300, 200).colourspace("scrgb").uhdrsave(str(path))
    with pytest.raises(pyvips.Error) as caught:
        pyvips.Operation.call("uhdrload", str(path))
    assert "uhdrload: operation is blocked" in caught.value.detail

    result = make_variants(str(path), "image/jpeg", max_pixels=MAX_PIXELS)

    assert (result.width, result.height) == (300, 200)
    assert pyvips.Image.new_from_file(str(path)).get("vips-loader") == "jpegload"
    assert_variants(result)


def test_pixel_limit_is_checked_on_the_header(tmp_path: Path) -> None:
    whole = gradient(1200, 800).jpegsave_buffer()
    path = tmp_path / "huge.jpg"
    # Cut in half: decoding any pixels would fail with invalid_image instead.
    path.write_bytes(whole[: len(whole) // 2])

    with pytest.raises(ApiError) as caught:
        make_variants(str(path), "image/jpeg", max_pixels=1200 * 800 - 1)

    error = caught.value
    assert (error.code, error.field, error.status) == ("image_too_large", "file", 422)
    assert error.message == f"image is 1200x800 pixels; the limit is {1200 * 800 - 1}"


def test_pixel_limit_is_inclusive(tmp_path: Path) -> None:
    path = save(tmp_path / "exact.png", gradient(300, 200))

    result = make_variants(str(path), "image/png", max_pixels=300 * 200)

    assert (result.width, result.height) == (300, 200)


def test_truncated_jpeg_is_an_invalid_image(tmp_path: Path) -> None:
    whole = gradient(1200, 800).jpegsave_buffer()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(whole[: len(whole) // 2])

    with pytest.raises(ApiError) as caught:
        make_variants(str(path), "image/jpeg", max_pixels=MAX_PIXELS)

    error = caught.value
    assert (error.code, error.field, error.status) == ("invalid_image", "file", 422)
    assert error.message.startswith("the image could not be decoded: ")
    assert str(tmp_path) not in error.message


def test_garbage_is_an_invalid_image(tmp_path: Path) -> None:
    path = tmp_path / "garbage.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)

    with pytest.raises(ApiError) as caught:
        make_variants(str(path), "image/png", max_pixels=MAX_PIXELS)

    assert caught.value.code == "invalid_image"


@pytest.mark.parametrize(
    "content_type",
    ["application/pdf", "text/plain", "application/zip", "image/bmp", "image/svg+xml"],
)
def test_other_types_have_no_variants(tmp_path: Path, content_type: str) -> None:
    path = tmp_path / "document"
    path.write_bytes(b"%PDF-1.7\n")

    assert make_variants(str(path), content_type, max_pixels=MAX_PIXELS) == NO_MEDIA


@pytest.mark.parametrize(
    ("name", "content", "loader"),
    [
        (
            "drawing.svg",
            '<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect/></svg>',
            "svgload",
        ),
        ("kernel.mat", "2 2\n1 2\n3 4\n", "matrixload"),
        ("table.csv", "1,2\n3,4\n", "csvload"),
    ],
)
def test_unexpected_loaders_are_blocked(tmp_path: Path, name: str, content: str, loader: str) -> None:
    path = tmp_path / name
    path.write_text(content)

    with pytest.raises(pyvips.Error) as caught:
        pyvips.Operation.call(loader, str(path))
    assert f"{loader}: operation is blocked" in caught.value.detail

    with pytest.raises(pyvips.Error):
        pyvips.Image.new_from_file(str(path))
    assert image_dimensions(str(path)) is None
    # Even when the caller is misled about the type, libvips will not parse it.
    with pytest.raises(ApiError) as refused:
        make_variants(str(path), "image/png", max_pixels=MAX_PIXELS)
    assert refused.value.code == "invalid_image"


@pytest.mark.parametrize("loader", ALLOWED_LOADERS)
def test_allowed_loaders_exist(loader: str) -> None:
    assert pyvips.type_from_name(loader) != 0


def test_configure_vips_bounds_the_cache_and_can_be_repeated(tmp_path: Path) -> None:
    configure_vips(cache_max_mem=64 * 1024 * 1024)
    assert pyvips.cache_get_max() > 0
    assert pyvips.cache_get_max_mem() == 64 * 1024 * 1024
    configure_vips(decode_budget_bytes=1234)
    assert media._decode_budget._budget == 1234
    configure_vips()
    assert media._decode_budget._budget == media.DECODE_BUDGET_BYTES
    assert (pyvips.cache_get_max(), pyvips.cache_get_max_mem(), pyvips.cache_get_max_files()) == (
        0,
        0,
        0,
    )

    path = save(tmp_path / "still.png", gradient(300, 200))
    assert_variants(make_variants(str(path), "image/png", max_pixels=MAX_PIXELS))


@_needs_heifsave
def test_a_heif_this_build_cannot_decode_is_kept_without_variants(tmp_path: Path) -> None:
    path = tmp_path / "photo.heic"
    _avif(gradient(640, 480), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # the header survives, the coded picture does not

    result = make_variants(str(path), "image/heif", max_pixels=10_000_000)

    assert (result.thumbnail, result.small) == (None, None)


def test_decode_bytes_counts_what_cannot_shrink_on_load(tmp_path: Path) -> None:
    image = gradient(400, 300)
    progressive = tmp_path / "progressive.jpg"
    image.jpegsave(str(progressive), interlace=True)
    baseline = save(tmp_path / "baseline.jpg", image)
    png = save(tmp_path / "still.png", image)

    def header(path: Path) -> pyvips.Image:
        return pyvips.Image.new_from_file(str(path), access="sequential")

    assert decode_bytes(header(progressive), "image/jpeg") == 400 * 300 * 3 * 2  # DCT coefficients
    assert decode_bytes(header(baseline), "image/jpeg") == media.SHRINKING_DECODE_BYTES
    assert decode_bytes(header(png), "image/png") == media.SHRINKING_DECODE_BYTES


def settle(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


class BudgetProbe:
    """Threads that each reserve some bytes of a DecodeBudget and hold them until told to let go."""

    def __init__(self, budget: int) -> None:
        self.budget = DecodeBudget(budget)
        self.inside: list[str] = []
        self._release: dict[str, threading.Event] = {}
        self._threads: dict[str, threading.Thread] = {}

    def arrive(self, name: str, nbytes: int) -> None:
        self._release[name] = threading.Event()

        def hold() -> None:
            with self.budget.reserve(nbytes):
                self.inside.append(name)
                self._release[name].wait(10)
            self.inside.remove(name)

        self._threads[name] = threading.Thread(target=hold, daemon=True)
        self._threads[name].start()
        settle(self._everyone_placed)  # in the order given: in, or in line, before the next one comes

    def _everyone_placed(self) -> bool:
        # Under the budget's lock: a thread leaves the line under it, and only then goes in.
        with self.budget._changed:
            placed = len(self.inside) + len(self.budget._waiting)
        return placed == sum(thread.is_alive() for thread in self._threads.values())

    def leave(self, name: str) -> None:
        self._release[name].set()
        self._threads[name].join(10)
        time.sleep(0.05)  # for the checks that nobody else came in

    def once_inside(self, *names: str) -> list[str]:
        """Who is inside once ``names`` are (or 10 s have passed): those let in come in a moment later."""
        settle(lambda: sorted(self.inside) == sorted(names))
        return self.inside

    def finish(self) -> None:
        for event in self._release.values():
            event.set()
        for thread in self._threads.values():
            thread.join(10)


def test_decodes_share_the_budget_first_come_first_served() -> None:
    probe = BudgetProbe(100)
    try:
        probe.arrive("a", 60)
        probe.arrive("b", 30)
        assert probe.inside == ["a", "b"]  # both fit: side by side
        probe.arrive("big", 60)
        probe.arrive("small", 5)
        assert probe.inside == ["a", "b"]  # big does not fit yet, and small waits its turn
        probe.leave("a")
        assert sorted(probe.once_inside("b", "big", "small")) == ["b", "big", "small"]
        probe.arrive("huge", 10_000)  # more than the whole budget
        probe.leave("b")
        probe.leave("big")
        assert probe.inside == ["small"]
        probe.leave("small")
        assert probe.once_inside("huge") == ["huge"]  # alone
        probe.arrive("after", 1)
        assert probe.inside == ["huge"]
        probe.leave("huge")
        assert probe.once_inside("after") == ["after"]
    finally:
        probe.finish()


def test_make_variants_keeps_its_decodes_within_the_budget(tmp_path: Path, monkeypatch) -> None:
    progressive = [tmp_path / f"p{i}.jpg" for i in range(3)]
    for path in progressive:
        gradient(800, 600).jpegsave(str(path), interlace=True)  # 2.9 MB of coefficients each
    baseline = [save(tmp_path / f"b{i}.jpg", gradient(800, 600)) for i in range(4)]
    monkeypatch.setattr(media, "SHRINKING_DECODE_BYTES", 1 << 20)
    monkeypatch.setattr(media, "_decode_budget", DecodeBudget(4 << 20))  # one progressive and one baseline

    lock = threading.Lock()
    in_flight: list[int] = []
    most = 0
    side_by_side = threading.Event()
    real_decode = media._decode_small

    def observed(path: str) -> pyvips.Image:
        nonlocal most
        cost = 800 * 600 * 3 * 2 if Path(path).name.startswith("p") else 1 << 20
        with lock:
            in_flight.append(cost)
            most = max(most, sum(in_flight))
            if len(in_flight) > 1:
                side_by_side.set()
        side_by_side.wait(5)  # the first decodes wait for another to join them (the budget lets two in)
        time.sleep(0.05)  # long enough for the other threads to arrive
        try:
            return real_decode(path)
        finally:
            with lock:
                in_flight.remove(cost)

    monkeypatch.setattr(media, "_decode_small", observed)
    jobs = [str(p) for pair in zip(baseline, [*progressive, baseline[-1]], strict=True) for p in pair]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda p: make_variants(p, "image/jpeg", max_pixels=MAX_PIXELS), jobs))

    for result in results:
        assert_variants(result)
    assert 2 << 20 <= most <= 4 << 20  # side by side, never past the budget
