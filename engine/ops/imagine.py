"""Text to image (imagine and reroll), one image per seed, for one job or a batch of jobs with one batch key."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import torch

from engine.jobs import Request, Result
from engine.ops.common import Report, finish, prompt_truncated, prompts, slice_job, step_callback, vae_slicing

if TYPE_CHECKING:
    from engine.pipeline import Runner


def imagine(runner: Runner, requests: list[Request], cancels: list[threading.Event],
            reports: list[Report | None]) -> list[Result]:
    """Text to image, one image per seed (imagine and reroll), for one job or a batch of jobs with one key."""
    first = requests[0]
    # 1. Check each prompt fits the text encoder window (diffusers cuts it; we say so).
    truncated = [prompt_truncated(runner, request.prompt) for request in requests]

    # 2. One CPU generator per image, prompt-major (job 1's images, then job 2's...), as diffusers orders them,
    #    so each image depends only on its own seed.
    generators = [torch.Generator("cpu").manual_seed(seed) for request in requests for seed in request.seeds]

    # 3. Denoise, with progress, previews and cancellation between steps.
    pipe = runner.t2i
    runner.use(pipe)
    with vae_slicing(pipe, on=len(requests) > 1):
        pictures = pipe(
            **prompts(pipe, requests),
            width=first.width,
            height=first.height,
            num_inference_steps=first.steps,
            guidance_scale=first.guidance,
            num_images_per_prompt=len(first.seeds),
            generator=generators,
            callback_on_step_end=step_callback(runner, cancels, reports, len(first.seeds)),
        ).images

    # 4. Per job: safety flags, PNGs with their recipe, the grid.
    return [finish(runner, request, slice_job(pictures, j, len(first.seeds)), truncated[j], steps=first.steps)
            for j, request in enumerate(requests)]
