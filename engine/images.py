"""Image helpers on Pillow alone (no torch): grids, PNG with the recipe, blurring. The bot may import this."""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor

from PIL import Image, ImageFilter, PngImagePlugin

# zlib level 1: generated images are mostly noise to zlib, so higher levels cost time and save little.
PNG_COMPRESS_LEVEL = 1


def make_grid(images: list[Image.Image]) -> Image.Image:
    """Four images of the same size in a 2x2 grid (reading order: 1 2 / 3 4)."""
    if len(images) != 4:
        raise ValueError(f"make_grid needs 4 images, got {len(images)}")
    width, height = images[0].size
    if any(image.size != (width, height) for image in images):
        raise ValueError(f"make_grid needs images of one size, got {[image.size for image in images]}")
    grid = Image.new("RGB", (2 * width, 2 * height))
    for n, image in enumerate(images):
        grid.paste(image.convert("RGB"), ((n % 2) * width, (n // 2) * height))
    return grid


def png_bytes(image: Image.Image, parameters: str | None) -> bytes:
    """Encode as PNG; `parameters` goes in the "parameters" text chunk (the AUTOMATIC1111 convention)."""
    info = None
    if parameters is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", parameters)
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info, compress_level=PNG_COMPRESS_LEVEL)
    return out.getvalue()


def png_many(pictures: list[tuple[Image.Image, str | None]]) -> list[bytes]:
    """`png_bytes` for several images at once, on all cores (Pillow releases the GIL while it encodes)."""
    if len(pictures) == 1:
        return [png_bytes(*pictures[0])]
    with ThreadPoolExecutor(max_workers=min(len(pictures), os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda item: png_bytes(*item), pictures))


def read_parameters(png: bytes) -> str | None:
    """The "parameters" text chunk of a PNG, or None."""
    with Image.open(io.BytesIO(png)) as image:
        return image.text.get("parameters") if hasattr(image, "text") else None


def parameters_text(
    prompt: str,
    negative_prompt: str,
    *,
    steps: int,
    sampler: str,
    guidance: float,
    seed: int,
    width: int,
    height: int,
    model: str,
    extra: dict[str, object] | None = None,
) -> str:
    """The recipe line block A1111-style tools read:

    prompt
    Negative prompt: ...
    Steps: 25, Sampler: EulerDiscreteScheduler, CFG scale: 7, Seed: 42, Size: 512x512, Model: ...
    """
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    fields = {
        "Steps": steps,
        "Sampler": sampler,
        "CFG scale": f"{guidance:g}",
        "Seed": seed,
        "Size": f"{width}x{height}",
        "Model": model,
        **(extra or {}),
    }
    lines.append(", ".join(f"{key}: {value}" for key, value in fields.items()))
    return "\n".join(lines)


def blur(png: bytes) -> bytes:
    """A strong Gaussian blur of a PNG (for images the safety checker flagged); the recipe chunk is kept."""
    with Image.open(io.BytesIO(png)) as image:
        parameters = image.text.get("parameters") if hasattr(image, "text") else None
        rgb = image.convert("RGB")
    radius = max(8, max(rgb.size) // 12)
    # Shrink, blur, grow: as strong as a huge-radius blur and much cheaper on big images.
    small = rgb.resize((max(1, rgb.width // 4), max(1, rgb.height // 4)), Image.Resampling.BILINEAR)
    small = small.filter(ImageFilter.GaussianBlur(radius / 4))
    return png_bytes(small.resize(rgb.size, Image.Resampling.BILINEAR), parameters)


def open_png(data: bytes) -> Image.Image:
    """Decode image bytes into an RGB PIL image; a sentence says what went wrong if they are not an image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as e:
        raise ValueError(f"init_image is not a readable image ({e})") from None
