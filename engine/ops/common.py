"""The steps the operations share: progress, previews and cancellation between steps, prompt arguments, the
safety checker, and the finished PNGs with their recipe. Each takes the Runner that owns the pipelines."""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from engine import images as imgs
from engine.jobs import Request, Result

if TYPE_CHECKING:
    from engine.pipeline import Runner

Report = Callable[[int, int, "bytes | None"], None]


class Cancelled(Exception):
    """Raised inside callback_on_step_end to leave the denoising loop; becomes JobCancelled."""

    def __init__(self, steps_done: int) -> None:
        super().__init__(steps_done)
        self.steps_done = steps_done


def step_callback(runner: Runner, cancels: list[threading.Event], reports: list[Report | None], per_job: int):
    """callback_on_step_end for the jobs of one call (each `per_job` images, in order): stop once every job is
    cancelled; each job still wanted gets its own progress and, every few steps, a preview of its own latents."""
    every = runner.settings.preview_every

    def on_step_end(pipe: DiffusionPipeline, i: int, t, callback_kwargs: dict) -> dict:
        if all(cancel.is_set() for cancel in cancels):
            raise Cancelled(i + 1)
        total = getattr(pipe, "num_timesteps", None) or i + 1
        step = i + 1
        for j, (cancel, report) in enumerate(zip(cancels, reports)):
            if report is None or cancel.is_set():
                continue
            preview = None
            if every and (step % every == 0) and step < total:
                # A small JPEG of this job's latents (engine/preview.py: the linear map or the tiny autoencoder).
                preview = runner.previewer(callback_kwargs["latents"][j * per_job:(j + 1) * per_job])
            report(step, total, preview)
        return callback_kwargs

    return on_step_end


def prompts(pipe: DiffusionPipeline, requests: list[Request]) -> dict:
    """The prompt arguments of a call. One job: its text, as ever. A batch: each job's prompt and negative prompt
    encoded as a call of its own would encode them (batch 1 through the text encoder; SDXL's zeroed empty
    negatives included), concatenated in job order; the pipeline repeats each per image, prompt-major."""
    if len(requests) == 1:
        return {"prompt": requests[0].prompt, "negative_prompt": requests[0].negative_prompt or None}
    guided = requests[0].guidance > 1.0 and getattr(pipe.unet.config, "time_cond_proj_dim", None) is None
    names = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
    parts: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for request in requests:
            encoded = pipe.encode_prompt(
                prompt=request.prompt, device=pipe._execution_device, num_images_per_prompt=1,
                do_classifier_free_guidance=guided, negative_prompt=request.negative_prompt or None,
            )
            for name, tensor in zip(names, encoded):
                if tensor is not None:
                    parts.setdefault(name, []).append(tensor)
    return {name: torch.cat(tensors) for name, tensors in parts.items()}


def prompt_truncated(runner: Runner, prompt: str) -> bool:
    """Whether the prompt is longer than the text encoder window (diffusers cuts it; we say so)."""
    tokenizer = getattr(runner.t2i, "tokenizer", None)
    if tokenizer is None:
        return False
    return len(tokenizer(prompt, truncation=False).input_ids) > tokenizer.model_max_length


def safety_flags(runner: Runner, pictures: list[Image.Image]) -> list[bool]:
    """Run the model's safety checker on the finished pictures; it may black out its copy, ours stay intact."""
    if runner.checker is None:
        return [False] * len(pictures)
    checker_device = next(runner.checker.parameters()).device
    checker_dtype = next(runner.checker.parameters()).dtype
    with torch.no_grad():
        clip_input = runner.feature_extractor(pictures, return_tensors="pt").pixel_values
        scratch = np.stack([np.asarray(p, dtype=np.float32) / 255 for p in pictures])
        _, flags = runner.checker(images=scratch, clip_input=clip_input.to(checker_device, checker_dtype))
    return [bool(flag) for flag in flags]


def finish(runner: Runner, request: Request, pictures: list[Image.Image], truncated: bool, *, steps: int,
           extra: dict | None = None) -> Result:
    """Safety flags, one PNG per image with its recipe, and the grid when there are four."""
    flags = safety_flags(runner, pictures)
    width, height = pictures[0].size
    recipe = dict(
        steps=steps, sampler=runner.defaults.scheduler, guidance=request.guidance, width=width, height=height,
        model=runner.defaults.name,
    )
    # The model's and LoRAs' hashes after "Model", the LoRAs in the prompt as <lora:name:weight> (A1111's way).
    prompt, model_fields = runner.recipe_fields(request)
    extra = {**model_fields, **(extra or {})}
    # One PNG per image with its own seed, and the grid with all four; encoded together.
    pngs = [
        (picture, imgs.parameters_text(prompt, request.negative_prompt, seed=seed, extra=extra, **recipe))
        for picture, seed in zip(pictures, request.seeds)
    ]
    if len(pictures) == 4:
        grid_extra = {**extra, "Grid seeds": '"' + ", ".join(map(str, request.seeds)) + '"'}
        grid_text = imgs.parameters_text(
            prompt, request.negative_prompt, seed=request.seeds[0], extra=grid_extra, **recipe
        )
        pngs.append((imgs.make_grid(pictures), grid_text))
    encoded = imgs.png_many(pngs)
    singles, grid = tuple(encoded[: len(pictures)]), (encoded[-1] if len(pictures) == 4 else None)
    return Result(
        images=singles, grid=grid, seeds=tuple(request.seeds), nsfw=tuple(flags), width=width, height=height,
        prompt_truncated=truncated, elapsed=0.0, model=runner.defaults.name, scheduler=runner.defaults.scheduler,
    )


def output_size(request: Request) -> tuple[int, int]:
    """Size of the images a request makes (for upscale: twice the chosen image)."""
    if request.kind != "upscale":
        return request.width, request.height
    width, height = fit_to_multiple_of_8(imgs.open_png(request.init_image)).size
    return 2 * width, 2 * height


def slice_job(pictures: list, job: int, per_job: int) -> list:
    """The pictures of the job-th job of a call (prompt-major order: each job's images together)."""
    return pictures[job * per_job:(job + 1) * per_job]


@contextlib.contextmanager
def vae_slicing(pipe: DiffusionPipeline, *, on: bool):
    """VAE slicing for batches: decode image by image, so a batch's decode needs no more memory than one image's."""
    switch = on and not pipe.vae.use_slicing
    if switch:
        pipe.vae.enable_slicing()
    try:
        yield
    finally:
        if switch:
            pipe.vae.disable_slicing()


def fit_to_multiple_of_8(image: Image.Image) -> Image.Image:
    width, height = image.width // 8 * 8, image.height // 8 * 8
    if (width, height) == image.size:
        return image
    return image.crop((0, 0, width, height))
