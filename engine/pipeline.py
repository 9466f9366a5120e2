"""The GPU side proper: load a diffusers pipeline once, and dispatch imagine / variation / upscale to it.

Only the engine's worker thread imports this module and calls into a Runner, so no locks are needed here.
Each operation is a module of its own in engine/ops/, reading top to bottom with numbered steps, like diffusers'
`StableDiffusionPipeline.__call__`; the Runner loads the pipelines, dispatches, and turns failures into JobFailed.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from dataclasses import replace
from typing import Callable

import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image, DiffusionPipeline
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from engine import fastpath, preview
from engine.batching import ALONE_SCHEDULERS, batch_key
from engine.jobs import JobCancelled, JobFailed, ModelDefaults, Request, Result
from engine.ops.common import Cancelled, Report, output_size
from engine.ops.imagine import imagine
from engine.ops.upscale import upscale
from engine.ops.variation import variation
from engine.settings import EngineSettings

log = logging.getLogger(__name__)

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}

# Pipelines whose encode_prompt gives each job its embeddings exactly as a call of its own would (SD 1.x/2.x, SDXL).
_BATCHABLE = {"StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionXLPipeline",
              "StableDiffusionXLImg2ImgPipeline"}
# Jobs per call when IMAGINE_MAX_BATCH is not set. On CUDA from published SD 1.5 / SDXL throughput figures (until a
# GPU measurement says otherwise); elsewhere 1: on CPU, benchmarks/batching.py (tiny model, 128 px, 10 steps) gave
# +10 % images/s at 2-3 jobs per call, nothing at 4, and later results for the head's member.
_CUDA_MAX_BATCH, _CUDA_MAX_BATCH_XL, _OTHER_MAX_BATCH = 4, 2, 1


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
                (result,) = imagine(self, [request], [cancel], [report])
            elif request.kind == "variation":
                (result,) = variation(self, [request], [cancel], [report])
            else:
                result = upscale(self, request, cancel, report)
        except Cancelled as e:
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
            raise JobFailed(_oom_message(request, output_size(request)))
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
                results = variation(self, requests, cancels, reports)
            else:
                results = imagine(self, requests, cancels, reports)
        except Cancelled as e:
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

    # -- placement -------------------------------------------------------------------------------------------

    def use(self, pipe: DiffusionPipeline) -> None:
        """With CPU offload, the offload hooks belong to one pipeline at a time; move them to `pipe`."""
        if self.settings.cpu_offload and self.device != "cpu" and self._offloaded_pipe is not pipe:
            pipe.enable_model_cpu_offload(device=self.device)
            self._offloaded_pipe = pipe


# -- small helpers --------------------------------------------------------------------------------------------------


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
