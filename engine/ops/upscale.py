"""One picture at twice its size: Lanczos resize, then a low-strength detail pass (or a dedicated upscaler)."""

from __future__ import annotations

import inspect
import math
import threading
from typing import TYPE_CHECKING

import torch
from PIL import Image

from engine import images as imgs
from engine.jobs import Request, Result
from engine.ops.common import Report, finish, fit_to_multiple_of_8, output_size, prompt_truncated, step_callback

if TYPE_CHECKING:
    from engine.pipeline import Runner


def upscale(runner: Runner, request: Request, cancel: threading.Event, report: Report | None) -> Result:
    """One image at twice its size: Lanczos resize, then a low-strength detail pass (or a dedicated upscaler)."""
    # 1. The chosen image and the target size.
    init = fit_to_multiple_of_8(imgs.open_png(request.init_image))
    width, height = output_size(request)
    strength = request.strength if request.strength is not None else runner.settings.upscale_strength
    truncated = prompt_truncated(runner, request.prompt)
    generator = torch.Generator("cpu").manual_seed(request.seeds[0])

    # 2. Resize with Lanczos: the detail pass only has to sharpen, not invent the layout.
    big = init.resize((width, height), Image.Resampling.LANCZOS)

    if runner.upscaler is not None:
        # 3a. A dedicated upscaler pipeline; its output is brought to exactly 2x.
        kwargs = {}
        if "callback_on_step_end" in inspect.signature(runner.upscaler.__call__).parameters:
            kwargs["callback_on_step_end"] = step_callback(runner, [cancel], [report], 1)
        runner.use(runner.upscaler)
        picture = runner.upscaler(
            prompt=request.prompt, image=init, num_inference_steps=request.steps, generator=generator, **kwargs
        ).images[0]
        if picture.size != (width, height):
            picture = picture.resize((width, height), Image.Resampling.LANCZOS)
        steps = request.steps
        extra = {"Upscaler": runner.settings.upscaler_model, "Upscale": 2}
    else:
        # 3b. Detail pass: img2img at low strength, VAE tiling on so the big decode fits in memory.
        steps = max(request.steps, math.ceil(1 / strength))
        pipe = runner.i2i
        runner.use(pipe)
        tiling_was_on = pipe.vae.use_tiling
        pipe.vae.enable_tiling()
        try:
            picture = pipe(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt or None,
                image=big,
                strength=strength,
                num_inference_steps=steps,
                guidance_scale=request.guidance,
                generator=[generator],
                callback_on_step_end=step_callback(runner, [cancel], [report], 1),
            ).images[0]
        finally:
            if not tiling_was_on:
                pipe.vae.disable_tiling()
        extra = {"Denoising strength": strength, "Upscale": 2}

    # 4. Safety flag and PNG with its recipe.
    return finish(runner, request, [picture], truncated, steps=steps, extra=extra)
