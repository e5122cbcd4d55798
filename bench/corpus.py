"""The thumbnailing corpus: the Debian wallpaper photos plus three generated images.

Run ``apt-get install ukui-wallpapers lomiri-wallpapers`` first; the generated
images are written once to ``bench/out/gen`` and reused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyvips

BACKGROUNDS = Path("/usr/share/backgrounds")
OUT = Path(__file__).resolve().parent / "out"
GEN = OUT / "gen"
LINKS = OUT / "corpus"  # one directory of symlinks: thumbor's FILE_LOADER_ROOT_PATH

_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".avif": "image/avif",
}


@dataclass(frozen=True)
class Item:
    name: str  # file name inside LINKS
    path: str
    content_type: str
    pixels: int
    progressive: bool

    @property
    def is_jpeg(self) -> bool:
        return self.content_type == "image/jpeg"

    @property
    def label(self) -> str:
        kind = self.content_type.split("/")[1].upper()
        return f"{kind}{' progressive' if self.progressive else ''}"


def _generate() -> None:
    """A 100-MP camera-like JPEG, a 12-MP AVIF and a 12-MP WebP, made from corpus photos."""
    GEN.mkdir(parents=True, exist_ok=True)
    big = GEN / "big-12500x8000.jpg"
    if not big.exists():
        # Upscaled photo plus a little sensor-like noise, so the entropy (and the
        # decode cost) is that of a real photo, not of a smooth upscale.
        src = pyvips.Image.new_from_file(str(BACKGROUNDS / "Kleiber_by_Lukas_Baubkus.jpg"))
        src = src.resize(8000 / src.height).crop(0, 0, 12500, 8000)
        noisy = (src + pyvips.Image.gaussnoise(12500, 8000, sigma=6)).cast("uchar")
        noisy.jpegsave(str(big) + ".tmp", Q=88, interlace=False, keep="none")
        os.replace(str(big) + ".tmp", big)
    for name, source, kwargs in (
        ("phone-4032x3024.avif", "Dragonfly_by_Bolly.jpg", {"compression": "av1", "Q": 55, "effort": 2}),
        ("photo-4000x3000.webp", "seeding_by_Clements_Engelhardt.jpg", {"Q": 80}),
    ):
        target = GEN / name
        if not target.exists():
            w, h = (int(v) for v in name.split("-")[1].split(".")[0].split("x"))
            img = pyvips.Image.thumbnail(str(BACKGROUNDS / source), w, height=h, crop="centre")
            img.write_to_file(str(target) + ".tmp" + target.suffix, **kwargs)
            os.replace(str(target) + ".tmp" + target.suffix, target)


def load() -> list[Item]:
    """Every corpus image (symlinked duplicates dropped), largest first."""
    if not BACKGROUNDS.is_dir() or not any(BACKGROUNDS.glob("*.jpg")):
        raise SystemExit("no corpus: apt-get install -y ukui-wallpapers lomiri-wallpapers")
    _generate()
    LINKS.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    items = []
    for path in sorted([*BACKGROUNDS.iterdir(), *GEN.iterdir()], key=lambda p: (p.is_symlink(), p.name)):
        real = os.path.realpath(path)
        if path.suffix.lower() not in _TYPES or real in seen or not path.is_file():  # one of each
            continue
        seen.add(real)
        link = LINKS / path.name
        if not link.is_symlink():
            link.symlink_to(real)
        header = pyvips.Image.new_from_file(real)
        progressive = bool(header.get_typeof("interlaced") and header.get("interlaced"))
        items.append(Item(path.name, str(link), _TYPES[path.suffix.lower()], header.width * header.height, progressive))
    return sorted(items, key=lambda i: -i.pixels)
