"""Opening an image: the one decoder of cleaning, ``webfg init``, training and inference.

Every reader goes through ``open_rgb`` so that a file is seen the same way everywhere:
decoded fully (a truncated file fails here, not hours into training), turned upright by
its EXIF orientation (web photos carry it often), and 16-bit grey scaled to 8 bits
(``convert("RGB")`` clips I;16 values above 255, which made them nearly white).
Without an orientation tag and at 8 bits, the pixels are exactly ``convert("RGB")``'s.
"""

from __future__ import annotations

import io
import os
import re

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def to_rgb(im: Image.Image) -> Image.Image:
    """A loaded PIL image → 8-bit RGB, upright by its EXIF orientation."""
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # a malformed EXIF block: the pixels are still good, keep them as stored
        pass
    if im.mode in SIXTEEN_BIT_MODES:
        # 16-bit grey (PNG, TIFF): full range 0..65535 onto 0..255
        grey = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(np.rint(grey / 257.0), 0, 255).astype(np.uint8), mode="L")
    elif im.mode == "F":
        im = Image.fromarray(np.clip(np.rint(np.asarray(im, dtype=np.float64)), 0, 255).astype(np.uint8), mode="L")
    return im.convert("RGB")


def open_rgb(source: str | os.PathLike | io.IOBase) -> Image.Image:
    """Decode a file (path or binary file object) fully into an upright 8-bit RGB image.

    Raises PIL's own errors (OSError, SyntaxError, ValueError...) for a bad file; use
    ``decode_error`` to turn one into a stable one-line reason.
    """
    with Image.open(source) as im:
        im.load()
        return to_rgb(im)


def decode_error(data: bytes) -> str | None:
    """Why these bytes are not a usable image, or None when they decode fully.

    The reason says what the file is (empty, text or HTML, truncated at byte N, not an
    image) and never embeds a memory address, so removed.tsv is the same on every run.
    """
    if not data:
        return "empty file (0 bytes)"
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format or "image"
            try:
                im.load()
                to_rgb(im)
            except Exception as e:  # PIL raises many types for broken files
                if _is_truncation(e):
                    return f"truncated {fmt}: the file ends at byte {len(data)} before the image data does"
                return f"broken {fmt}: {_stable(type(e).__name__ + ': ' + str(e))}"
    except UnidentifiedImageError:
        return _what_it_is(data)
    except Exception as e:  # header parse errors (SyntaxError, OSError, DecompressionBombError...)
        fmt = _format_by_magic(data) or "image"
        if _is_truncation(e):
            return f"truncated or damaged {fmt}: its header does not parse (the file ends at byte {len(data)})"
        return f"broken {fmt} header: {_stable(type(e).__name__ + ': ' + str(e))}"
    return None


MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"II*\0": "TIFF",
    b"MM\0*": "TIFF",
}


def _format_by_magic(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((fmt for magic, fmt in MAGIC.items() if data.startswith(magic)), None)


def _is_truncation(e: Exception) -> bool:
    text = str(e).lower()
    return isinstance(e, EOFError) or "truncated" in text or "premature end" in text or "buffer is not large" in text


def _what_it_is(data: bytes) -> str:
    """A not-image file described by its content."""
    fmt = _format_by_magic(data)
    if fmt:  # an image format's signature, then too little to go on
        return f"truncated or damaged {fmt}: its header does not parse (the file ends at byte {len(data)})"
    head = data[:512].lstrip()
    lower = head.lower()
    if lower.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in lower:
        return f"HTML, not an image ({len(data)} bytes; an error page saved in its place?)"
    try:
        text = data[:4096].decode("utf-8")
    except UnicodeDecodeError as e:
        text = data[: e.start].decode("utf-8") if e.start > 4000 else None
    if text is not None and all(c.isprintable() or c in "\t\r\n" for c in text):
        first = text.strip().splitlines()[0][:40] if text.strip() else ""
        return f"text, not an image ({len(data)} bytes, starts {first!r})"
    return f"not an image (unknown format, {len(data)} bytes starting {data[:8].hex(' ')})"


def _stable(message: str) -> str:
    """One line, no memory addresses (``<... object at 0x7f...>``)."""
    message = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "<file>", message)
    message = re.sub(r"0x[0-9a-fA-F]{6,}", "0x…", message)
    return " ".join(message.split())
