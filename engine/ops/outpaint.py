"""Zoom Out and Pan: paint a larger canvas around the source, one candidate per seed, the source's pixels kept.

The canvas (request.width x request.height) and where the source goes in it (`engine.jobs.outpaint_box`) are
decided before the job reaches the engine; this op pre-fills the new area, masks it, inpaints it with the loaded
weights (`AutoPipelineForInpainting.from_pipe`, or IMAGINE_INPAINT_MODEL) and pastes the source back.

A 4-channel UNet (any text-to-image model) inpaints by blending: after every step, diffusers puts the kept area's
latents back, noised to that step, so only the masked area is the model's. A 9-channel UNet (an inpainting model)
also sees the mask and the masked image as input channels, and joins the seam better.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageFilter

from engine import images as imgs
from engine.jobs import Request, Result, outpaint_box
from engine.ops.common import Report, finish, prompt_truncated, step_callback

if TYPE_CHECKING:
    from engine.pipeline import Runner

# Denoising strength of the inpaint. Below 1, the first latents are the pre-filled canvas noised to about 0.84 of
# the schedule (SD's scaled-linear betas keep ~16 % of the signal there), so the new area's colours continue the
# source's edges while its structure is the model's; at 1 they would be pure noise and the pre-fill unused.
STRENGTH = 0.9
# Overlap of the mask into the source, as a share of the source's shorter side (at least one latent cell): the
# model repaints this band to join the seam, and the paste-back feathers over it.
OVERLAP = 1 / 16
# Pre-fill: blur radius as a share of the canvas's longer side, and the noise's spread in 8-bit levels, drawn once
# per latent cell (per-pixel noise would not survive the VAE's encoder).
BLUR = 1 / 16
NOISE_LEVELS = 24.0


def outpaint(runner: Runner, request: Request, cancel: threading.Event, report: Report | None) -> Result:
    """Zoom out or pan from request.init_image onto a request.width x request.height canvas, one image per seed."""
    pipe = runner.inpaint
    canvas_size = (request.width, request.height)
    source = imgs.open_png(request.init_image)
    left, top, width, height = outpaint_box(request.kind, source.size, canvas_size, zoom=request.zoom,
                                            pan=request.pan)
    if (width, height) != source.size:
        source = source.resize((width, height), Image.Resampling.LANCZOS)
    truncated = prompt_truncated(runner, request.prompt)

    # 1. Pad the canvas and pre-fill the new area: the source's edges extended outwards, blurred, plus noise seeded
    #    per image (so a seed gives the same picture again), so the model is not steered towards a flat colour.
    extended = _extend_edges(source, canvas_size, left, top)
    canvases = [_prefill(extended, source, (left, top), seed, pipe.vae_scale_factor) for seed in request.seeds]

    # 2. Mask the new area plus a small overlap into the source, on the latent grid (the mask is downsampled to the
    #    latents by vae_scale_factor, so edges between latent cells are exact). Sides flush with the canvas edge
    #    (a pan's kept side) need no overlap.
    keep = _kept_rect((left, top, width, height), canvas_size, pipe.vae_scale_factor)
    mask = Image.new("L", canvas_size, 255)
    mask.paste(0, keep)

    # 3. Inpaint the candidates, one CPU generator per image, with progress, previews and cancellation between steps.
    steps = max(request.steps, math.ceil(1 / STRENGTH))
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in request.seeds]
    runner.use(pipe)
    pictures = pipe(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt or None,
        image=canvases,
        mask_image=mask,
        width=request.width,
        height=request.height,
        strength=STRENGTH,
        num_inference_steps=steps,
        guidance_scale=request.guidance,
        num_images_per_prompt=len(request.seeds),
        generator=generators,
        callback_on_step_end=step_callback(runner, [cancel], [report], len(request.seeds)),
    ).images

    # 4. Paste the source's own pixels back through a feathered mask: inside the kept rectangle they are the
    #    source's exactly; across the overlap band they fade into the model's, so the seam is soft.
    alpha = _feather((left, top, width, height), keep, canvas_size)
    placed = np.asarray(extended, dtype=np.float32)
    pictures = [_blend(placed, np.asarray(picture.convert("RGB"), dtype=np.float32), alpha) for picture in pictures]

    # 5. Safety flags, PNGs with their recipe (what made it: "Zoom: 2" or "Pan: right"), the grid.
    extra = {"Zoom": f"{request.zoom:g}"} if request.kind == "zoom" else {"Pan": request.pan}
    if runner.settings.inpaint_model:
        extra["Inpaint model"] = runner.settings.inpaint_model
    return finish(runner, request, pictures, truncated, steps=steps, extra=extra | {"Denoising strength": STRENGTH})


# -- the steps' helpers -------------------------------------------------------------------------------------------


def _extend_edges(source: Image.Image, canvas_size: tuple[int, int], left: int, top: int) -> Image.Image:
    """The canvas with the source at (left, top) and every other pixel the nearest pixel of the source."""
    pixels = np.asarray(source)
    canvas_width, canvas_height = canvas_size
    rows = np.clip(np.arange(canvas_height) - top, 0, source.height - 1)
    columns = np.clip(np.arange(canvas_width) - left, 0, source.width - 1)
    return Image.fromarray(pixels[rows][:, columns])


def _prefill(extended: Image.Image, source: Image.Image, at: tuple[int, int], seed: int, cell: int) -> Image.Image:
    """The extended canvas blurred, with coarse noise of this seed, and the source sharp in its place."""
    radius = max(2.0, max(extended.size) * BLUR)
    blurred = np.asarray(extended.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32)
    rng = np.random.default_rng(seed)
    cells_high, cells_wide = -(-extended.height // cell), -(-extended.width // cell)
    noise = rng.normal(0.0, NOISE_LEVELS, (cells_high, cells_wide, 3)).astype(np.float32)
    noise = noise.repeat(cell, axis=0).repeat(cell, axis=1)[:extended.height, :extended.width]
    canvas = Image.fromarray(np.clip(blurred + noise, 0, 255).round().astype(np.uint8))
    canvas.paste(source, at)
    return canvas


def _kept_rect(box: tuple[int, int, int, int], canvas_size: tuple[int, int], cell: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the source's box shrunk by the overlap on each side that borders new area, inwards onto the
    latent grid; a side flush with the canvas edge stays where it is."""
    left, top, width, height = box
    canvas_width, canvas_height = canvas_size
    overlap = max(cell, round(min(width, height) * OVERLAP))
    x0 = left if left == 0 else math.ceil((left + overlap) / cell) * cell
    y0 = top if top == 0 else math.ceil((top + overlap) / cell) * cell
    x1 = left + width if left + width == canvas_width else (left + width - overlap) // cell * cell
    y1 = top + height if top + height == canvas_height else (top + height - overlap) // cell * cell
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"the source is too small to keep at {width}x{height} px; zoom out less")
    return x0, y0, x1, y1


def _feather(box: tuple[int, int, int, int], keep: tuple[int, int, int, int],
             canvas_size: tuple[int, int]) -> np.ndarray:
    """Per pixel, how much of the source to paste back: 1 inside `keep`, falling linearly to 0 at the box's edge
    across the overlap band, 0 outside the box. Shape (height, width, 1)."""
    left, top, width, height = box
    canvas_width, canvas_height = canvas_size

    def ramp(n: int, start: int, inner_start: int, inner_end: int, end: int) -> np.ndarray:
        at = np.arange(n, dtype=np.float32) + 0.5  # pixel centres
        rising = np.clip((at - start) / (inner_start - start), 0, 1) if inner_start > start else (at >= start)
        falling = np.clip((end - at) / (end - inner_end), 0, 1) if end > inner_end else (at < end)
        return np.minimum(rising, falling).astype(np.float32)

    across = ramp(canvas_width, left, keep[0], keep[2], left + width)
    down = ramp(canvas_height, top, keep[1], keep[3], top + height)
    return np.minimum.outer(down, across)[..., None]


def _blend(source: np.ndarray, painted: np.ndarray, alpha: np.ndarray) -> Image.Image:
    return Image.fromarray((alpha * source + (1 - alpha) * painted).round().astype(np.uint8))
