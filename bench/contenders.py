"""The contenders: attachd's make_variants, Pillow, the Pillow decode-only floor, thumbor.

Each takes a corpus item and makes both variants (the floor only decodes).
"""

from __future__ import annotations

import http.client
import io
import os
import subprocess
import time
from urllib.parse import quote

from PIL import Image, ImageOps

from bench.corpus import LINKS, OUT, Item
from workers.media import SMALL, THUMBNAIL, configure_vips, make_variants

MAX_PIXELS = 100_000_000  # services.core.settings.Settings.max_image_pixels
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # the same limit for Pillow (no DecompressionBombWarning)
_LANCZOS = Image.Resampling.LANCZOS


def configure() -> None:
    configure_vips()  # as the worker does at start-up


def attachd(item: Item) -> None:
    result = make_variants(item.path, item.content_type, max_pixels=MAX_PIXELS)
    assert result.small and result.thumbnail, item.name


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=82, optimize=True)
    return out.getvalue()


def pillow(item: Item) -> None:
    """What attachd does, written with Pillow: one decode (reduced by draft for JPEG), centre crops."""
    with Image.open(item.path) as image:
        if image.format == "JPEG":
            image.draft("RGB", SMALL)
        image = ImageOps.exif_transpose(image)
        if image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
        small = ImageOps.fit(image, SMALL, _LANCZOS)
        if small.mode == "RGBA":  # flatten on white, after the shrink as attachd does
            flat = Image.new("RGB", small.size, (255, 255, 255))
            flat.paste(small, mask=small.getchannel("A"))
            small = flat
        thumbnail = ImageOps.fit(small, THUMBNAIL, _LANCZOS)
        assert _jpeg(small) and _jpeg(thumbnail)


def floor(item: Item) -> None:
    """Decode-only floor: libjpeg-turbo at the reduced scale draft picks, nothing else (JPEG only)."""
    with Image.open(item.path) as image:
        image.draft("RGB", SMALL)
        image.load()


THUMBOR_VENV = OUT / "thumbor-venv"
THUMBOR_VERSION = "7.8.0"
_THUMBOR_CONF = f"""
LOADER = 'thumbor.loaders.file_loader'
FILE_LOADER_ROOT_PATH = {str(LINKS)!r}
STORAGE = 'thumbor.storages.no_storage'
RESULT_STORAGE = None
ENGINE = 'thumbor.engines.pil'
ENGINE_THREADPOOL_SIZE = 0
QUALITY = 82
PROGRESSIVE_JPEG = False
RESPECT_ORIENTATION = True
MAX_PIXELS = {MAX_PIXELS + 1}
MAX_AGE = 0
"""


class Thumbor:
    """A thumbor server on 127.0.0.1 in its own venv, one process, file loader, no storage."""

    def __init__(self, port: int = 8899) -> None:
        binary = THUMBOR_VENV / "bin" / "thumbor"
        if not binary.exists():
            raise SystemExit(
                f"no thumbor: python3 -m venv {THUMBOR_VENV} && "
                f"{THUMBOR_VENV}/bin/pip install thumbor=={THUMBOR_VERSION}"
            )
        conf = OUT / "thumbor.conf"
        conf.write_text(_THUMBOR_CONF)
        self.log = open(OUT / "thumbor.log", "w")
        self.proc = subprocess.Popen(
            [str(binary), "-i", "127.0.0.1", "-p", str(port), "-c", str(conf), "-l", "error"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(200):
            try:
                self._get("/healthcheck")
                break
            except OSError:
                self.conn.close()
                time.sleep(0.1)
        else:
            self.close()
            raise SystemExit(f"thumbor did not start: see {OUT / 'thumbor.log'}")

    def _get(self, url: str) -> bytes:
        self.conn.request("GET", url)
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"thumbor {response.status} for {url}")
        return body

    def __call__(self, item: Item) -> None:
        # thumbor makes each size from its own decode; format(jpeg) so PNG/WebP/AVIF give JPEG as attachd does.
        for width, height in (SMALL, THUMBNAIL):
            body = self._get(f"/unsafe/{width}x{height}/filters:format(jpeg)/{quote(item.name)}")
            assert body[:2] == b"\xff\xd8", item.name

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self.conn.close()
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()
