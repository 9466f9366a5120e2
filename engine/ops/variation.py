"""Image to image from each job's chosen picture (V1-V4, Vary, image prompts), one new image per seed, for one job
or a batch of jobs with one batch key."""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING

import torch
from PIL import Image

from engine import images as imgs
from engine.jobs import Request, Result
from engine.ops.common import Report, finish, prompt_truncated, prompts, slice_job, step_callback, vae_slicing

if TYPE_CHECKING:
    from engine.pipeline import Runner


def variation(runner: Runner, requests: list[Request], cancels: list[threading.Event],
              reports: list[Report | None]) -> list[Result]:
    """Image to image from each job's chosen picture, one new image per seed, at the request's size."""
    first = requests[0]
    # 1. Each chosen image at the requested size (an upscale varies back at the size its grid was made at),
    #    given once per image: diffusers would otherwise cycle a batch's images across its jobs.
    inits = []
    for request in requests:
        init = imgs.open_png(request.init_image).convert("RGB")
        if init.size != (request.width, request.height):
            init = init.resize((request.width, request.height), Image.Resampling.LANCZOS)
        inits += [init] * len(request.seeds)
    truncated = [prompt_truncated(runner, request.prompt) for request in requests]

    # 2. Enough steps that steps * strength is at least one.
    steps = max(first.steps, math.ceil(1 / first.strength))

    # 3. One CPU generator per image, prompt-major.
    generators = [torch.Generator("cpu").manual_seed(seed) for request in requests for seed in request.seeds]

    # 4. Denoise from the noised chosen images.
    pipe = runner.i2i
    runner.use(pipe)
    with vae_slicing(pipe, on=len(requests) > 1):
        pictures = pipe(
            **prompts(pipe, requests),
            image=inits[0] if len(requests) == 1 else inits,
            strength=first.strength,
            num_inference_steps=steps,
            guidance_scale=first.guidance,
            num_images_per_prompt=len(first.seeds),
            generator=generators,
            callback_on_step_end=step_callback(runner, cancels, reports, len(first.seeds)),
        ).images

    # 5. Per job: safety flags, PNGs with their recipe, the grid.
    return [finish(runner, request, slice_job(pictures, j, len(first.seeds)), truncated[j], steps=steps,
                   extra={"Denoising strength": request.strength}
                   | ({} if request.image_weight is None else {"Image weight": f"{request.image_weight:g}"}))
            for j, request in enumerate(requests)]
