"""The GPU side proper: hold the loaded models (engine/models.py), dispatch imagine / variation / upscale / outpaint
to them.

Only the engine's worker thread imports this module and calls into a Runner, so no locks are needed here.
Each operation is a module of its own in engine/ops/, reading top to bottom with numbered steps, like diffusers'
`StableDiffusionPipeline.__call__`; the Runner makes each call's model current (loading it if need be), dispatches,
and turns failures into JobFailed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Callable

import torch
from diffusers import AutoPipelineForInpainting, DiffusionPipeline
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from engine import fastpath
from engine.batching import ALONE_SCHEDULERS, batch_key
from engine.jobs import JobCancelled, JobFailed, ModelDefaults, Request, Result
from engine.loading import from_pretrained
from engine.models import LoadedModel, Models, free_memory
from engine.ops.common import Cancelled, Report, output_size
from engine.ops.imagine import imagine
from engine.ops.outpaint import outpaint
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


def resolve_max_batch(setting: int | None, device: str, pipeline_class: str, defaults: ModelDefaults) -> int:
    """Jobs per pipeline call for one model: IMAGINE_MAX_BATCH, else 4 on CUDA at SD 1.5-class sizes, 2 at
    SDXL-class, else 1. Pipelines we cannot encode per job, and schedulers drawing one noise tensor for a whole
    batch, run jobs alone."""
    if pipeline_class not in _BATCHABLE or defaults.scheduler in ALONE_SCHEDULERS:
        if setting not in (None, 1):
            log.warning("IMAGINE_MAX_BATCH=%d is ignored for %s: %s with %s runs each job alone", setting,
                        defaults.name, pipeline_class, defaults.scheduler)
        return 1
    if setting is not None:
        return setting
    if device != "cuda":
        return _OTHER_MAX_BATCH
    return _CUDA_MAX_BATCH_XL if "XL" in pipeline_class or defaults.size >= 1024 else _CUDA_MAX_BATCH


# -- the runner ---------------------------------------------------------------------------------------------------


class Runner:
    """Owns the loaded models (engine/models.py) and the optional upscaler, and dispatches each call to its
    operation (engine/ops/) on the model the call names. `t2i`, `i2i`, `checker`, `defaults`... are the current
    model's: the one the call in progress runs on."""

    def __init__(self, settings: EngineSettings, device: str, dtype: torch.dtype, models: Models,
                 upscaler: DiffusionPipeline | None, *, inpaint: DiffusionPipeline | None = None) -> None:
        self.settings = settings
        self.device = device
        self.dtype = dtype
        self.dtype_name = str(dtype).removeprefix("torch.")
        self.models = models
        self.upscaler = upscaler
        self.dedicated_inpaint = inpaint  # IMAGINE_INPAINT_MODEL, or None: each model's own sibling
        self.current: LoadedModel | None = None
        self._offloaded_pipe: DiffusionPipeline | None = None
        # One number for every model, so that any batch the store plans fits whichever model it names.
        self.max_batch = min(resolve_max_batch(settings.max_batch, device, models.pipeline_classes[name], defaults)
                             for name, defaults in models.defaults.items())
        models.max_batch = self.max_batch

    @classmethod
    def load(cls, settings: EngineSettings) -> "Runner":
        # 1. Device and dtype, once.
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        if dtype == torch.float16 and device == "cpu":
            raise RuntimeError("IMAGINE_DTYPE float16 does not run on cpu; use float32 or bfloat16")
        if settings.cpu_offload and device == "cpu":
            log.warning("IMAGINE_CPU_OFFLOAD is ignored on cpu")

        # 2. Every configured model's defaults from its configs (no weights yet); loading bars only where the tqdm
        #    bar is on.
        if not settings.progress_bar:
            diffusers_logging.disable_progress_bar()
            transformers_logging.disable_progress_bar()
        models = Models(settings, device, dtype)

        # 3. Optional dedicated upscaler (e.g. stabilityai/sd-x2-latent-upscaler), shared by every model.
        upscaler = None
        if settings.upscaler_model:
            upscaler = DiffusionPipeline.from_pretrained(settings.upscaler_model, dtype=dtype)
            if settings.cpu_offload and device != "cpu":
                upscaler.enable_model_cpu_offload(device=device)
            else:
                upscaler.to(device)
            upscaler.set_progress_bar_config(disable=not settings.progress_bar)

        # 4. Optional dedicated inpainting model for zoom and pan (IMAGINE_INPAINT_MODEL), shared by every model;
        #    without it each model outpaints with its own inpainting sibling (engine/models.py).
        inpaint = None
        if settings.inpaint_model:
            inpaint = _load_inpaint_model(settings.inpaint_model, dtype, device,
                                          settings.cpu_offload and device != "cpu")
            inpaint.set_progress_bar_config(disable=not settings.progress_bar)

        # 5. The default model on the device (engine/models.py: pipelines, siblings, checker, fast path, previewer;
        #    with IMAGINE_COMPILE its menu is compiled now); the others load when a job names them.
        runner = cls(settings, device, dtype, models, upscaler, inpaint=inpaint)
        runner.current = models.get(models.default)
        return runner

    def close(self) -> None:
        """Drop the models, the upscaler and the inpainting model and give their memory back."""
        self.current = self._offloaded_pipe = self.upscaler = self.dedicated_inpaint = None
        self.models.close()
        free_memory(self.device)

    # -- the current model, for the operations ----------------------------------------------------------------

    @property
    def t2i(self) -> DiffusionPipeline:
        return self.current.t2i

    @property
    def i2i(self) -> DiffusionPipeline:
        return self.current.i2i

    @property
    def inpaint(self) -> DiffusionPipeline:
        """Zoom and pan's pipeline: IMAGINE_INPAINT_MODEL's, else the current model's inpainting sibling."""
        return self.dedicated_inpaint or self.current.inpaint

    @property
    def checker(self):
        return self.current.checker

    @property
    def feature_extractor(self):
        return self.current.feature_extractor

    @property
    def previewer(self) -> Callable[[torch.Tensor], bytes]:
        return self.current.previewer

    @property
    def fastpath(self) -> fastpath.FastPath:
        return self.current.fast

    @property
    def defaults(self) -> ModelDefaults:
        """The current model's defaults (the default model's until a job names another)."""
        return self.current.defaults if self.current is not None else self.models.defaults[self.models.default]

    def recipe_fields(self, request: Request) -> tuple[str, dict]:
        """What the PNG recipe says of the model and LoRAs, A1111-style: the prompt with a <lora:name:weight> per
        LoRA, and "Model hash" and "Lora hashes" fields (first 10 hex of each file's sha256, engine/models.py)."""
        prompt = " ".join([request.prompt] + [f"<lora:{name}:{weight:g}>" for name, weight in request.loras])
        fields = {}
        if self.current.hash:
            fields["Model hash"] = self.current.hash
        if request.loras:
            hashes = ", ".join(f"{name}: {self.current.adapters[name]}" for name, _ in request.loras)
            fields["Lora hashes"] = f'"{hashes}"'
        return prompt, fields

    def prepare(self, request: Request, reports: list[Report | None]) -> None:
        """Make the call's model current, loading it first if it isn't on the device (each job is told, with
        step 0 and loading=<name>), and activate exactly the call's LoRAs. JobFailed when either can't be had."""
        name = self.models.name_of(request.model)
        if self.current is None or self.current.name != name:
            self.current = self._offloaded_pipe = None  # nothing here may keep an evicted model alive

            def tell(loading: str) -> None:
                for report in reports:
                    if report is not None:
                        report(0, 0, None, loading=loading)

            failed = False
            try:
                self.current = self.models.get(name, tell)
            except (RuntimeError, OSError, ValueError):  # incl. torch.OutOfMemoryError
                log.exception("could not load model %s", name)
                failed = True
            if failed:  # here, once the traceback (and the half-loaded weights it holds) is gone
                free_memory(self.device)
                raise JobFailed(f"The model {name} could not be loaded here; an admin can check the bot's log "
                                "(the model's files, or the memory it needs).")
        unknown = [lora for lora, _ in request.loras if lora not in self.models.loras]
        if unknown:
            raise JobFailed(f"There is no LoRA called {unknown[0]} here; the LoRAs are "
                            f"{', '.join(self.models.loras[:25]) or 'none'}.")
        self.current.use_loras(request.loras, self.settings.lora_dir)

    # -- one job, or a batch of compatible jobs ---------------------------------------------------------------

    def run(self, request: Request, cancel: threading.Event, report: Report | None) -> Result:
        """Run one request; every failure comes out as JobFailed (readable) or JobCancelled."""
        if cancel.is_set():
            raise JobCancelled("the job was cancelled before it started")
        started = time.perf_counter()
        out_of_memory = False
        try:
            self.prepare(request, [report])
            if request.kind in ("imagine", "reroll"):
                (result,) = imagine(self, [request], [cancel], [report])
            elif request.kind == "variation":
                (result,) = variation(self, [request], [cancel], [report])
            elif request.kind in ("zoom", "pan"):
                result = outpaint(self, request, cancel, report)
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
            free_memory(self.device)
            raise JobFailed(_oom_message(request, output_size(request)))
        return _replace_elapsed(result, time.perf_counter() - started)

    def run_batch(self, requests: list[Request], cancels: list[threading.Event],
                  reports: list[Report | None]) -> list[Result | JobCancelled]:
        """Run jobs with one batch key in one pipeline call; one outcome per job, in order (a cancelled job's images
        are discarded). Any failure raises BatchFailed, and the engine reruns each job alone."""
        keys = {self.batch_key(request) for request in requests}
        if len(keys) != 1 or None in keys:
            raise ValueError(f"jobs share a call only with one batch key, got {len(keys)} keys: {keys}")
        self.prepare(requests[0], reports)  # one key: one model and one LoRA set; JobFailed fails each job alone
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
            free_memory(self.device)
            raise BatchFailed(f"a batched call of {len(requests)} jobs failed ({failure})")
        elapsed = time.perf_counter() - started
        return [JobCancelled("the job was cancelled while it ran with others") if cancel.is_set()
                else _replace_elapsed(result, elapsed) for result, cancel in zip(results, cancels)]

    def batch_key(self, request: Request):
        """The key that says which requests may share a call on this pipeline (None: runs alone)."""
        name = (request.model or self.models.default).lower()
        defaults = self.models.defaults.get(name)
        if defaults is None:  # an unknown model: the job runs alone, and fails alone
            return None
        return batch_key(request.kind, width=request.width, height=request.height, steps=request.steps,
                         guidance=request.guidance, strength=request.strength, images=len(request.seeds),
                         model=name, scheduler=defaults.scheduler, loras=request.loras)

    # -- placement -------------------------------------------------------------------------------------------

    def use(self, pipe: DiffusionPipeline) -> None:
        """With CPU offload, the offload hooks belong to one pipeline at a time; move them to `pipe`."""
        if self.settings.cpu_offload and self.device != "cpu" and self._offloaded_pipe is not pipe:
            pipe.enable_model_cpu_offload(device=self.device)
            self._offloaded_pipe = pipe


# -- small helpers --------------------------------------------------------------------------------------------------


def _load_inpaint_model(name: str, dtype: torch.dtype, device: str, offload: bool) -> DiffusionPipeline:
    """IMAGINE_INPAINT_MODEL: a dedicated inpainting pipeline; its own safety checker is detached (ours runs)."""
    inpaint = from_pretrained(AutoPipelineForInpainting, name, setting=f"IMAGINE_INPAINT_MODEL={name!r}",
                              kind="with a diffusers inpainting model", dtype=dtype)
    if getattr(inpaint, "safety_checker", None) is not None:
        inpaint.register_modules(safety_checker=None)
        if "requires_safety_checker" in inpaint.config:
            inpaint.register_to_config(requires_safety_checker=False)
    if offload:
        inpaint.enable_model_cpu_offload(device=device)
    else:
        inpaint.to(device)
    return inpaint


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
