"""Image prompts: check a member's attachment before anything is queued, and fit it to the job's size. Pillow only.

Checks, cheapest first: the attachment's metadata (an image content type, at most 10 MB) before downloading it;
then the bytes themselves with Pillow (the real format is PNG, JPEG or WebP; at most 4096 px a side and an explicit
pixel limit, so a decompression bomb is refused from its header; `verify()` and a full decode, so a corrupt or
truncated file is refused here and not in the engine).
"""

from __future__ import annotations

import io
import math
from fractions import Fraction

import discord
from PIL import Image, ImageOps

from bot.errors import quoted
from bot.parsing import MAX_ASPECT, BadInput

MAX_BYTES = 10 * 1024 * 1024
MAX_SIDE = 4096
MAX_PIXELS = MAX_SIDE * MAX_SIDE  # explicit, instead of Pillow's default of about 89 million
FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP"}
ALLOWED = "a PNG, JPEG or WebP picture"


def check_attachment(attachment: discord.Attachment) -> None:
    """Refuse from the metadata alone (no download): not an image, or over 10 MB."""
    name = quoted(attachment.filename)
    content_type = (attachment.content_type or "").split(";")[0].strip().lower()
    if content_type and not content_type.startswith("image/"):
        raise BadInput(f"`{name}` is not an image; attach {ALLOWED}.")
    if attachment.size > MAX_BYTES:
        raise BadInput(f"`{name}` is {attachment.size / 2**20:.1f} MB; image prompts may be at most 10 MB.")


def open_picture(data: bytes, filename: str) -> Image.Image:
    """The decoded picture (RGB, EXIF orientation applied), or BadInput saying what is wrong with the file."""
    name = quoted(filename)
    if len(data) > MAX_BYTES:
        raise BadInput(f"`{name}` is {len(data) / 2**20:.1f} MB; image prompts may be at most 10 MB.")
    corrupt = BadInput(f"`{name}` is damaged or incomplete, so I can't read it; attach {ALLOWED}.")
    # 1. The header: format and size, before any pixel is decoded.
    try:
        with Image.open(io.BytesIO(data)) as probe:
            kind, (width, height) = probe.format, probe.size
            if kind in FORMATS:
                probe.verify()  # checksums and structure (PNG chunks), without decoding the pixels
    except Image.DecompressionBombError:
        raise _bomb(name) from None
    except Image.UnidentifiedImageError:
        raise BadInput(f"`{name}` is not an image I can read; attach {ALLOWED}.") from None
    except (OSError, SyntaxError, ValueError):
        raise corrupt from None
    if kind not in FORMATS:
        raise BadInput(f"`{name}` is a {kind} image; attach {ALLOWED}.")
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise BadInput(f"`{name}` is {width}×{height} px; image prompts may be at most {MAX_SIDE} px a side.")
    # 2. The pixels: a full decode, so a truncated file fails here.
    try:
        with Image.open(io.BytesIO(data), formats=[kind]) as image:
            image.load()
            return ImageOps.exif_transpose(image).convert("RGB")
    except Image.DecompressionBombError:
        raise _bomb(name) from None
    except (OSError, SyntaxError, ValueError):
        raise corrupt from None


def _bomb(name: str) -> BadInput:
    return BadInput(f"`{name}` has far too many pixels; image prompts may be at most {MAX_SIDE} px a side.")


def own_aspect(size: tuple[int, int]) -> str:
    """The picture's aspect ratio as a small ratio ("4:3"), clamped to what --ar allows (3:1 either way)."""
    ratio = min(max(Fraction(*size), 1 / Fraction(int(MAX_ASPECT))), Fraction(int(MAX_ASPECT)))
    ratio = ratio.limit_denominator(16)
    return f"{ratio.numerator}:{ratio.denominator}"


def fit(picture: Image.Image, width: int, height: int) -> bytes:
    """The picture centre-cropped to width:height and resized to width×height, as PNG bytes."""
    w, h = picture.size
    if w * height > h * width:  # wider than wanted: crop the sides
        crop = max(1, math.floor(h * width / height))
        box = ((w - crop) // 2, 0, (w - crop) // 2 + crop, h)
    else:  # taller than wanted (or equal): crop top and bottom
        crop = max(1, math.floor(w * height / width))
        box = (0, (h - crop) // 2, w, (h - crop) // 2 + crop)
    fitted = picture.crop(box).resize((width, height), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    fitted.save(buffer, format="PNG")
    return buffer.getvalue()
