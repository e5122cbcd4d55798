"""What the console's responses say to the browser about what it may load. Pure, no I/O."""

from __future__ import annotations

from urllib.parse import urlsplit


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an absolute http(s) URL; None for anything else (an empty setting)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(public_url: str = "") -> str:
    """Everything from the console's own origin and nothing from anywhere else: no CDN, no inline script.

    Images also come from ``blob:`` and ``data:`` (Uppy's previews of the files being uploaded, the icons in
    its stylesheet). When ``ATTACHD_PUBLIC_URL`` puts the signed links (thumbnails, downloads) and the tus
    upload URLs on another origin, that origin is allowed for images and requests too.
    """
    public = origin_of(public_url)
    extra = f" {public}" if public else ""
    directives = {
        "default-src": "'self'",
        "img-src": f"'self' blob: data:{extra}",
        "connect-src": f"'self'{extra}",
        "object-src": "'none'",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())
