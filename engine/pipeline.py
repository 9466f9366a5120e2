"""The GPU side proper: load a diffusers pipeline once, run imagine / variation / upscale on it.

Only the engine's worker thread imports this module and calls into a Runner, so no locks are needed here.
Each operation reads top to bottom with numbered steps, like diffusers' `StableDiffusionPipeline.__call__`.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import logging
import math
import os
import threading
import time
from dataclasses import replace
from typing import Callable

import numpy as np
import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image, DiffusionPipeline
from diffusers.utils import logging as diffusers_logging
from PIL import Image
from transformers.utils import logging as transformers_logging

from engine import fastpath, preview
from engine import images as imgs
from engine.batching import ALONE_SCHEDULERS, batch_key
from engine.jobs import JobCancelled, JobFailed, ModelDefaults, Request, Result
from engine.settings import EngineSettings

log = logging.getLogger(__name__)

Report = Callable[[int, int, "bytes | None"], None]

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}

# Pipelines whose encode_prompt gives each job its embeddings exactly as a call of its own would (SD 1.x/2.x, SDXL).
_BATCHABLE = {"StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionXLPipeline",
              "StableDiffusionXLImg2ImgPipeline"}
# Jobs per call when IMAGINE_MAX_BATCH is not set. On CUDA from published SD 1.5 / SDXL throughput figures (until a
# GPU measurement says otherwise); elsewhere 1: on CPU, benchmarks/batching.py (tiny model, 128 px, 10 steps) gave
# +10 % images/s at 2-3 jobs per call, nothing at 4, and later results for the head's member.
_CUDA_MAX_BATCH, _CUDA_MAX_BATCH_XL, _OTHER_MAX_BATCH = 4, 2, 1


class _Cancelled(Exception):
    """Raised inside callback_on_step_end to leave the denoising loop; becomes JobCancelled."""

    def __init__(self, steps_done: int) -> None:
        super().__init__(steps_done)
        self.steps_done = steps_done


class BatchFailed(Exception):
    """A batched call failed (out of memory, or any error); the engine reruns each of its jobs alone."""


# -- device and dtype ---------------------------------------------------------------------------------------------


def resolve_device(setting: str) -> str:
    """"auto" -> cuda, then mps, then cpu. An explicit device that is not there is an error that says so."""
    if setting == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("IMAGINE_DEVICE is cuda, but torch sees no CUDA GPU (is this a CPU-only torch build?)")
    if setting == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("IMAGINE_DEVICE is mps, but this machine has no Apple MPS device")
    return setting


def resolve_dtype(setting: str, device: str) -> torch.dtype:
    """"auto" -> float16 on CUDA (half the memory, faster), float32 elsewhere."""
    if setting == "auto":
        return torch.float16 if device == "cuda" else torch.float32
    return _DTYPES[setting]


def resolve_max_batch(setting: int | None, device: str, pipe: DiffusionPipeline, defaults: ModelDefaults) -> int:
    """Jobs per pipeline call: IMAGINE_MAX_BATCH, else 4 on CUDA at SD 1.5-class sizes, 2 at SDXL-class, else 1.
    Pipelines we cannot encode per job, and schedulers drawing one noise tensor for a whole batch, run jobs alone."""
    if type(pipe).__name__ not in _BATCHABLE or defaults.scheduler in ALONE_SCHEDULERS:
        if setting not in (None, 1):
            log.warning("IMAGINE_MAX_BATCH=%d is ignored: %s with %s runs each job alone", setting,
                        type(pipe).__name__, defaults.scheduler)
        return 1
    if setting is not None:
        return setting
    if device != "cuda":
        return _OTHER_MAX_BATCH
    return _CUDA_MAX_BATCH_XL if "XL" in type(pipe).__name__ or defaults.size >= 1024 else _CUDA_MAX_BATCH


def model_defaults(pipe: DiffusionPipeline, model: str, settings: EngineSettings) -> ModelDefaults:
    """Sensible steps, guidance and native size for this model; settings override each of them."""
    name = model.rstrip("/\\")
    display = name if not os.path.isdir(name) else os.path.basename(os.path.abspath(name))
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    sample_size = getattr(getattr(denoiser, "config", None), "sample_size", None)
    if isinstance(sample_size, (tuple, list)):
        sample_size = sample_size[0]
    native = int(sample_size * pipe.vae_scale_factor) if sample_size else 512
    if "turbo" in name.lower():  # sd-turbo, sdxl-turbo: adversarially distilled, no guidance
        steps, guidance, native = 4, 0.0, 512
    elif "XL" in type(pipe).__name__:  # SDXL: 1024 from its config
        steps, guidance = 30, 6.0
    else:  # SD 1.x (512), SD 2.x (768 or 512 from the config), unknown models (config)
        steps, guidance = 25, 7.0
    return ModelDefaults(
        steps=settings.steps or steps,
        guidance=settings.guidance if settings.guidance is not None else guidance,
        size=settings.size or native,
        model=display,
        scheduler=type(pipe.scheduler).__name__,
    )


# -- the runner ---------------------------------------------------------------------------------------------------


class Runner:
    """Owns the text-to-image pipeline, the image-to-image pipeline sharing its weights, and the safety checker."""

    def __init__(self, settings: EngineSettings, device: str, dtype: torch.dtype, t2i: DiffusionPipeline,
                 i2i: DiffusionPipeline, checker, feature_extractor, upscaler: DiffusionPipeline | None, *,
                 fast: fastpath.FastPath | None = None, previewer: Callable[[torch.Tensor], bytes] | None = None,
                 ) -> None:
        self.settings = settings
        self.device = device
        self.dtype = dtype
        self.dtype_name = str(dtype).removeprefix("torch.")
        self.t2i = t2i
        self.i2i = i2i
        self.checker = checker
        self.feature_extractor = feature_extractor
        self.upscaler = upscaler
        self.defaults = model_defaults(t2i, settings.model, settings)
        self.fastpath = fast
        self.previewer = previewer or preview.LinearPreview.for_pipeline(t2i)
        self._offloaded_pipe: DiffusionPipeline | None = None
        self.max_batch = resolve_max_batch(settings.max_batch, device, t2i, self.defaults)

    @classmethod
    def load(cls, settings: EngineSettings) -> "Runner":
        # 1. Device and dtype, once.
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        if dtype == torch.float16 and device == "cpu":
            raise RuntimeError("IMAGINE_DTYPE float16 does not run on cpu; use float32 or bfloat16")

        # 2. The text-to-image pipeline, from a hub id or a local folder (loading bars only where the tqdm bar is on).
        if not settings.progress_bar:
            diffusers_logging.disable_progress_bar()
            transformers_logging.disable_progress_bar()
        started = time.perf_counter()
        try:
            t2i = AutoPipelineForText2Image.from_pretrained(settings.model, dtype=dtype)
        except (OSError, ValueError, EnvironmentError) as e:
            raise RuntimeError(
                f"could not load IMAGINE_MODEL={settings.model!r}: it must be a Hugging Face hub id or a local folder "
                f"with a diffusers model_index.json ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            ) from e

        # 3. Detach the safety checker: we run it ourselves afterwards, so users get flags, not black squares.
        checker = getattr(t2i, "safety_checker", None)
        feature_extractor = getattr(t2i, "feature_extractor", None)
        if checker is not None:
            t2i.register_modules(safety_checker=None)
            if "requires_safety_checker" in t2i.config:
                t2i.register_to_config(requires_safety_checker=False)
        if not settings.safety_checker or feature_extractor is None:
            checker = None
        if checker is not None:  # its "black image will be returned" warning is not true of our use
            logging.getLogger(type(checker).__module__).setLevel(logging.ERROR)

        # 4. The image-to-image pipeline on the same weights (nothing is loaded twice).
        i2i = AutoPipelineForImage2Image.from_pipe(t2i)

        # 5. Placement: whole pipeline on the device, or model CPU offload (each model visits the GPU in turn).
        offload = settings.cpu_offload and device != "cpu"
        if settings.cpu_offload and not offload:
            log.warning("IMAGINE_CPU_OFFLOAD is ignored on cpu")
        if not offload:
            t2i.to(device)
        if checker is not None:
            checker.to("cpu" if offload else device, dtype=torch.float32 if offload else dtype)
        if settings.vae_tiling:
            t2i.vae.enable_tiling()
        for pipe in (t2i, i2i):
            pipe.set_progress_bar_config(disable=not settings.progress_bar)

        # 6. The opt-in fast path (engine/fastpath.py: a replacement VAE, channels_last, compiled UNet and VAE
        #    decoder) and the previewer (engine/preview.py: the linear latent map, or IMAGINE_PREVIEW_MODEL).
        fast = fastpath.prepare(settings, t2i, i2i, device, dtype)
        previewer = preview.load(settings, t2i, device, dtype)

        # 7. Optional dedicated upscaler (e.g. stabilityai/sd-x2-latent-upscaler).
        upscaler = None
        if settings.upscaler_model:
            upscaler = DiffusionPipeline.from_pretrained(settings.upscaler_model, dtype=dtype)
            if offload:
                upscaler.enable_model_cpu_offload(device=device)
            else:
                upscaler.to(device)
            upscaler.set_progress_bar_config(disable=not settings.progress_bar)

        runner = cls(settings, device, dtype, t2i, i2i, checker, feature_extractor, upscaler, fast=fast,
                     previewer=previewer)
        log.info("loaded %s in %.1fs", settings.model, time.perf_counter() - started)

        # 8. With IMAGINE_COMPILE, compile every shape of the menu now, so that no member waits for a compile.
        fast.warm_up(t2i, native=runner.defaults.size, guidance=runner.defaults.guidance, max_batch=runner.max_batch)
        log.info("fast path: %s, previews: %s", fast.describe(), previewer.name)
        return runner

    def close(self) -> None:
        """Drop the pipelines and give their memory back."""
        self.t2i = self.i2i = self.upscaler = self.checker = None
        _free_memory(self.device)

    # -- one job, or a batch of compatible jobs ---------------------------------------------------------------

    def run(self, request: Request, cancel: threading.Event, report: Report | None) -> Result:
        """Run one request; every failure comes out as JobFailed (readable) or JobCancelled."""
        if cancel.is_set():
            raise JobCancelled("the job was cancelled before it started")
        started = time.perf_counter()
        out_of_memory = False
        try:
            if request.kind in ("imagine", "reroll"):
                (result,) = self.imagine([request], [cancel], [report])
            elif request.kind == "variation":
                (result,) = self.variation([request], [cancel], [report])
            else:
                result = self.upscale(request, cancel, report)
        except _Cancelled as e:
            raise JobCancelled(f"the job was cancelled after {e.steps_done} steps") from None
        except torch.OutOfMemoryError:
            out_of_memory = True  # free memory below, once this frame's traceback is gone
        except JobFailed:
            raise
        except Exception as e:
            log.exception("%s job failed", request.kind)
            first_line = (str(e).splitlines() or [""])[0][:200]
            raise JobFailed(f"Something went wrong while making the image: {type(e).__name__}: {first_line}") from None
        if out_of_memory:
            _free_memory(self.device)
            raise JobFailed(_oom_message(request, self._output_size(request)))
        return _replace_elapsed(result, time.perf_counter() - started)

    def run_batch(self, requests: list[Request], cancels: list[threading.Event],
                  reports: list[Report | None]) -> list[Result | JobCancelled]:
        """Run jobs with one batch key in one pipeline call; one outcome per job, in order (a cancelled job's images
        are discarded). Any failure raises BatchFailed, and the engine reruns each job alone."""
        keys = {self.batch_key(request) for request in requests}
        if len(keys) != 1 or None in keys:
            raise ValueError(f"jobs share a call only with one batch key, got {len(keys)} keys: {keys}")
        started = time.perf_counter()
        failure = None
        try:
            if requests[0].kind == "variation":
                results = self.variation(requests, cancels, reports)
            else:
                results = self.imagine(requests, cancels, reports)
        except _Cancelled as e:
            return [JobCancelled(f"the job was cancelled after {e.steps_done} steps") for _ in requests]
        except Exception as e:  # incl. torch.OutOfMemoryError; the traceback (and its tensors) is dropped here
            failure = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
        if failure is not None:
            _free_memory(self.device)
            raise BatchFailed(f"a batched call of {len(requests)} jobs failed ({failure})")
        elapsed = time.perf_counter() - started
        return [JobCancelled("the job was cancelled while it ran with others") if cancel.is_set()
                else _replace_elapsed(result, elapsed) for result, cancel in zip(results, cancels)]

    def batch_key(self, request: Request):
        """The key that says which requests may share a call on this pipeline (None: runs alone)."""
        return batch_key(request.kind, width=request.width, height=request.height, steps=request.steps,
                         guidance=request.guidance, strength=request.strength, images=len(request.seeds),
                         model=self.defaults.model, scheduler=self.defaults.scheduler)

    def imagine(self, requests: list[Request], cancels: list[threading.Event],
                reports: list[Report | None]) -> list[Result]:
        """Text to image, one image per seed (imagine and reroll), for one job or a batch of jobs with one key."""
        first = requests[0]
        # 1. Check each prompt fits the text encoder window (diffusers cuts it; we say so).
        truncated = [self._prompt_truncated(request.prompt) for request in requests]

        # 2. One CPU generator per image, prompt-major (job 1's images, then job 2's...), as diffusers orders them,
        #    so each image depends only on its own seed.
        generators = [torch.Generator("cpu").manual_seed(seed) for request in requests for seed in request.seeds]

        # 3. Denoise, with progress, previews and cancellation between steps.
        self._use(self.t2i)
        with _vae_slicing(self.t2i, on=len(requests) > 1):
            pictures = self.t2i(
                **self._prompts(self.t2i, requests),
                width=first.width,
                height=first.height,
                num_inference_steps=first.steps,
                guidance_scale=first.guidance,
                num_images_per_prompt=len(first.seeds),
                generator=generators,
                callback_on_step_end=self._step_callback(cancels, reports, len(first.seeds)),
            ).images

        # 4. Per job: safety flags, PNGs with their recipe, the grid.
        return [self._finish(request, _slice(pictures, j, len(first.seeds)), truncated[j], steps=first.steps)
                for j, request in enumerate(requests)]

    def variation(self, requests: list[Request], cancels: list[threading.Event],
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
        truncated = [self._prompt_truncated(request.prompt) for request in requests]

        # 2. Enough steps that steps * strength is at least one.
        steps = max(first.steps, math.ceil(1 / first.strength))

        # 3. One CPU generator per image, prompt-major.
        generators = [torch.Generator("cpu").manual_seed(seed) for request in requests for seed in request.seeds]

        # 4. Denoise from the noised chosen images.
        self._use(self.i2i)
        with _vae_slicing(self.i2i, on=len(requests) > 1):
            pictures = self.i2i(
                **self._prompts(self.i2i, requests),
                image=inits[0] if len(requests) == 1 else inits,
                strength=first.strength,
                num_inference_steps=steps,
                guidance_scale=first.guidance,
                num_images_per_prompt=len(first.seeds),
                generator=generators,
                callback_on_step_end=self._step_callback(cancels, reports, len(first.seeds)),
            ).images

        # 5. Per job: safety flags, PNGs with their recipe, the grid.
        return [self._finish(request, _slice(pictures, j, len(first.seeds)), truncated[j], steps=steps,
                             extra={"Denoising strength": request.strength}
                             | ({} if request.image_weight is None else {"Image weight": f"{request.image_weight:g}"}))
                for j, request in enumerate(requests)]

    def upscale(self, request: Request, cancel: threading.Event, report: Report | None) -> Result:
        """One image at twice its size: Lanczos resize, then a low-strength detail pass (or a dedicated upscaler)."""
        # 1. The chosen image and the target size.
        init = _fit_to_multiple_of_8(imgs.open_png(request.init_image))
        width, height = self._output_size(request)
        strength = request.strength if request.strength is not None else self.settings.upscale_strength
        truncated = self._prompt_truncated(request.prompt)
        generator = torch.Generator("cpu").manual_seed(request.seeds[0])

        # 2. Resize with Lanczos: the detail pass only has to sharpen, not invent the layout.
        big = init.resize((width, height), Image.Resampling.LANCZOS)

        if self.upscaler is not None:
            # 3a. A dedicated upscaler pipeline; its output is brought to exactly 2x.
            kwargs = {}
            if "callback_on_step_end" in inspect.signature(self.upscaler.__call__).parameters:
                kwargs["callback_on_step_end"] = self._step_callback([cancel], [report], 1)
            self._use(self.upscaler)
            picture = self.upscaler(
                prompt=request.prompt, image=init, num_inference_steps=request.steps, generator=generator, **kwargs
            ).images[0]
            if picture.size != (width, height):
                picture = picture.resize((width, height), Image.Resampling.LANCZOS)
            steps = request.steps
            extra = {"Upscaler": self.settings.upscaler_model, "Upscale": 2}
        else:
            # 3b. Detail pass: img2img at low strength, VAE tiling on so the big decode fits in memory.
            steps = max(request.steps, math.ceil(1 / strength))
            self._use(self.i2i)
            tiling_was_on = self.i2i.vae.use_tiling
            self.i2i.vae.enable_tiling()
            try:
                picture = self.i2i(
                    prompt=request.prompt,
                    negative_prompt=request.negative_prompt or None,
                    image=big,
                    strength=strength,
                    num_inference_steps=steps,
                    guidance_scale=request.guidance,
                    generator=[generator],
                    callback_on_step_end=self._step_callback([cancel], [report], 1),
                ).images[0]
            finally:
                if not tiling_was_on:
                    self.i2i.vae.disable_tiling()
            extra = {"Denoising strength": strength, "Upscale": 2}

        # 4. Safety flag and PNG with its recipe.
        return self._finish(request, [picture], truncated, steps=steps, extra=extra)

    # -- shared steps -----------------------------------------------------------------------------------------

    def _use(self, pipe: DiffusionPipeline) -> None:
        """With CPU offload, the offload hooks belong to one pipeline at a time; move them to `pipe`."""
        if self.settings.cpu_offload and self.device != "cpu" and self._offloaded_pipe is not pipe:
            pipe.enable_model_cpu_offload(device=self.device)
            self._offloaded_pipe = pipe

    def _step_callback(self, cancels: list[threading.Event], reports: list[Report | None], per_job: int):
        """callback_on_step_end for the jobs of one call (each `per_job` images, in order): stop once every job is
        cancelled; each job still wanted gets its own progress and, every few steps, a preview of its own latents."""
        every = self.settings.preview_every

        def on_step_end(pipe: DiffusionPipeline, i: int, t, callback_kwargs: dict) -> dict:
            if all(cancel.is_set() for cancel in cancels):
                raise _Cancelled(i + 1)
            total = getattr(pipe, "num_timesteps", None) or i + 1
            step = i + 1
            for j, (cancel, report) in enumerate(zip(cancels, reports)):
                if report is None or cancel.is_set():
                    continue
                preview = None
                if every and (step % every == 0) and step < total:
                    preview = self._preview(callback_kwargs["latents"][j * per_job:(j + 1) * per_job])
                report(step, total, preview)
            return callback_kwargs

        return on_step_end

    def _prompts(self, pipe: DiffusionPipeline, requests: list[Request]) -> dict:
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

    def _preview(self, latents: torch.Tensor) -> bytes:
        """A small JPEG of one job's current latents (engine/preview.py: the linear map or the tiny autoencoder)."""
        return self.previewer(latents)

    def _prompt_truncated(self, prompt: str) -> bool:
        tokenizer = getattr(self.t2i, "tokenizer", None)
        if tokenizer is None:
            return False
        return len(tokenizer(prompt, truncation=False).input_ids) > tokenizer.model_max_length

    def _safety_flags(self, pictures: list[Image.Image]) -> list[bool]:
        """Run the model's safety checker on the finished pictures; it may black out its copy, ours stay intact."""
        if self.checker is None:
            return [False] * len(pictures)
        checker_device = next(self.checker.parameters()).device
        checker_dtype = next(self.checker.parameters()).dtype
        with torch.no_grad():
            clip_input = self.feature_extractor(pictures, return_tensors="pt").pixel_values
            scratch = np.stack([np.asarray(p, dtype=np.float32) / 255 for p in pictures])
            _, flags = self.checker(images=scratch, clip_input=clip_input.to(checker_device, checker_dtype))
        return [bool(flag) for flag in flags]

    def _finish(self, request: Request, pictures: list[Image.Image], truncated: bool, *, steps: int,
                extra: dict | None = None) -> Result:
        flags = self._safety_flags(pictures)
        width, height = pictures[0].size
        recipe = dict(
            steps=steps, sampler=self.defaults.scheduler, guidance=request.guidance, width=width, height=height,
            model=self.defaults.model,
        )
        # One PNG per image with its own seed, and the grid with all four; encoded together.
        pngs = [
            (picture, imgs.parameters_text(request.prompt, request.negative_prompt, seed=seed, extra=extra, **recipe))
            for picture, seed in zip(pictures, request.seeds)
        ]
        if len(pictures) == 4:
            grid_extra = {**(extra or {}), "Grid seeds": '"' + ", ".join(map(str, request.seeds)) + '"'}
            grid_text = imgs.parameters_text(
                request.prompt, request.negative_prompt, seed=request.seeds[0], extra=grid_extra, **recipe
            )
            pngs.append((imgs.make_grid(pictures), grid_text))
        encoded = imgs.png_many(pngs)
        singles, grid = tuple(encoded[: len(pictures)]), (encoded[-1] if len(pictures) == 4 else None)
        return Result(
            images=singles, grid=grid, seeds=tuple(request.seeds), nsfw=tuple(flags), width=width, height=height,
            prompt_truncated=truncated, elapsed=0.0, model=self.defaults.model, scheduler=self.defaults.scheduler,
        )

    def _output_size(self, request: Request) -> tuple[int, int]:
        """Size of the images a request makes (for upscale: twice the chosen image)."""
        if request.kind != "upscale":
            return request.width, request.height
        width, height = _fit_to_multiple_of_8(imgs.open_png(request.init_image)).size
        return (2 * width, 2 * height) if request.kind == "upscale" else (width, height)


# -- small helpers --------------------------------------------------------------------------------------------------


def _slice(pictures: list, job: int, per_job: int) -> list:
    """The pictures of the job-th job of a call (prompt-major order: each job's images together)."""
    return pictures[job * per_job:(job + 1) * per_job]


@contextlib.contextmanager
def _vae_slicing(pipe: DiffusionPipeline, *, on: bool):
    """VAE slicing for batches: decode image by image, so a batch's decode needs no more memory than one image's."""
    switch = on and not pipe.vae.use_slicing
    if switch:
        pipe.vae.enable_slicing()
    try:
        yield
    finally:
        if switch:
            pipe.vae.disable_slicing()


def _fit_to_multiple_of_8(image: Image.Image) -> Image.Image:
    width, height = image.width // 8 * 8, image.height // 8 * 8
    if (width, height) == image.size:
        return image
    return image.crop((0, 0, width, height))


def _free_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    elif device == "mps":
        torch.mps.empty_cache()


def _oom_message(request: Request, size: tuple[int, int]) -> str:
    width, height = size
    if request.kind == "upscale":
        return (f"The GPU ran out of memory while upscaling to {width}x{height}. "
                "Try upscaling a smaller image, or again when the bot is less busy.")
    count = len(request.seeds)
    return (f"The GPU ran out of memory while making {count} image{'s' if count > 1 else ''} at {width}x{height}. "
            "Try a squarer aspect ratio or a smaller size, fewer images, or again when the bot is less busy.")


def _replace_elapsed(result: Result, elapsed: float) -> Result:
    return replace(result, elapsed=round(elapsed, 3))
