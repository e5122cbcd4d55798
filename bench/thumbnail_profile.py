"""Where attachd's JPEG time goes, against the Pillow decode-only floor.

    python -m bench.thumbnail_profile [--reps 5]

Per JPEG, CPU time (best of --reps, so other load on the machine matters less):
  floor      Pillow: open + draft("RGB", 161x107) + load, i.e. libjpeg-turbo at 1/8 scale mostly
  vips dec   libvips: the same file decoded at the shrink-on-load that thumbnail picks, nothing else
  attachd    make_variants: header + thumbnail (decode, resize, crop) + 72x48 + two JPEG encodes
so "vips dec / floor" is the codec-and-loader gap and "attachd - vips dec" the pipeline overhead.
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyvips
from PIL import Image

from bench import corpus
from workers.media import SMALL, configure_vips, make_variants

Image.MAX_IMAGE_PIXELS = None


def _jpeg_shrink(width: int, height: int) -> int:
    """libvips' rule for thumbnail + crop: leave at least a factor of 2 for the resize."""
    factor = min(width / SMALL[0], height / SMALL[1])
    return 8 if factor >= 16 else 4 if factor >= 8 else 2 if factor >= 4 else 1


def _floor(path: str) -> None:
    with Image.open(path) as image:
        image.draft("RGB", SMALL)
        image.load()


def _cpu(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        c = time.process_time()
        fn()
        best = min(best, time.process_time() - c)
    return 1000 * best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    configure_vips()
    rows = []
    print(
        f"{'image':32} {'kind':17} {'shrink':>6} {'floor':>7} {'vips dec':>8} {'attachd':>8} "
        f"{'dec/floor':>9} {'att/floor':>9} {'overhead':>8}"
    )
    for item in (i for i in corpus.load() if i.is_jpeg):
        header = pyvips.Image.new_from_file(item.path)
        shrink = _jpeg_shrink(header.width, header.height)
        floor = _cpu(lambda: _floor(item.path), args.reps)
        dec = _cpu(
            lambda: pyvips.Image.new_from_file(item.path, access="sequential", shrink=shrink).copy_memory(), args.reps
        )
        att = _cpu(lambda: make_variants(item.path, item.content_type, max_pixels=100_000_000), args.reps)
        rows.append((floor, dec, att))
        print(
            f"{item.name[:32]:32} {item.label:17} {shrink:>6} {floor:7.1f} {dec:8.1f} {att:8.1f} "
            f"{dec / floor:9.2f} {att / floor:9.2f} {att - dec:8.1f}"
        )
    med = statistics.median
    floor, dec, att = (med(col) for col in zip(*rows))
    print(
        f"{'median (ms CPU; ratios: median per image)':56} {floor:7.1f} {dec:8.1f} {att:8.1f} "
        f"{med(d / f for f, d, _a in rows):9.2f} {med(a / f for f, _d, a in rows):9.2f} "
        f"{med(a - d for _f, d, a in rows):8.1f}"
    )


if __name__ == "__main__":
    main()
