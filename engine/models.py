"""Several models on one device: every model's defaults read from its configs at start-up, weights loaded on demand.

    models = Models(settings, device, dtype)   # reads each model's configs (defaults, pipeline class): no weights
    model = models.get("turbo", on_load)       # the loaded model; if it isn't on the device, on_load(name), the least
                                               # recently used beyond IMAGINE_MAX_LOADED_MODELS go, and it loads
    model.use_loras((("ink", 0.8),), lora_dir) # each LoRA loaded once as an adapter; activated for the next call

Loading lives here, running in engine/pipeline.py: a LoadedModel is what the operations run on (its text-to-image
pipeline, its image-to-image sibling made with `from_pipe`, its safety checker, fast path and previewer). Only the
engine's worker thread calls into this module, so no locks are needed; `Models.loaded` is a tuple the event loop may
read at any time.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import hashlib
import json
import logging
import os
import re
import sys
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from diffusers import (AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image,
                       DiffusionPipeline)

from engine import fastpath, preview
from engine.jobs import JobFailed, ModelDefaults
from engine.loading import from_pretrained, not_loadable
from engine.settings import LORA_SUFFIX, EngineSettings

log = logging.getLogger(__name__)

HASH_CHARS = 10  # A1111's short hash: the first 10 hex digits of the weights file's sha256
_DEFAULT_SCALE = 8  # vae_scale_factor when a model's VAE config doesn't say


# -- what a model is, from its configs ------------------------------------------------------------------------------


def setting_of(name: str, source: str, settings: EngineSettings) -> str:
    """How an error names a model: as the server owner wrote it in .env."""
    return f"IMAGINE_MODELS {name}={source!r}" if settings.models else f"IMAGINE_MODEL={source!r}"


def read_defaults(name: str, source: str, settings: EngineSettings) -> tuple[ModelDefaults, str]:
    """A model's defaults and its pipeline class name, from its model_index.json and its denoiser, VAE and scheduler
    configs (a few KB from the hub or the folder), without loading its weights. settings override steps, guidance
    and size for every model.

    Steps and guidance: a turbo model (sd-turbo, sdxl-turbo: "turbo" in its source or name) 4 steps, guidance 0 and
    512 px; SDXL 30 steps, guidance 6; others 25 steps, guidance 7. Native size: the denoiser's sample_size times
    the VAE's scale factor (2 ** (len(block_out_channels) - 1)), 512 when the configs don't say.
    """
    try:
        index = _config(source, None, "model_index.json")
    except Exception as e:  # noqa: BLE001 - any failure here is "not a model we can read"
        raise not_loadable(setting_of(name, source, settings), "with a diffusers model_index.json", e) from e
    pipeline_class = str(index.get("_class_name", ""))
    denoiser = next((part for part in ("unet", "transformer") if part in index), None)
    sample_size = _optional_config(source, denoiser, "config.json").get("sample_size") if denoiser else None
    if isinstance(sample_size, (tuple, list)):
        sample_size = sample_size[0]
    blocks = _optional_config(source, "vae", "config.json").get("block_out_channels") if "vae" in index else None
    scale = 2 ** (len(blocks) - 1) if blocks else _DEFAULT_SCALE
    scheduler = _optional_config(source, "scheduler", "scheduler_config.json").get("_class_name") \
        or (index.get("scheduler") or [None, "unknown"])[1]
    native = int(sample_size * scale) if sample_size else 512
    if "turbo" in source.lower() or "turbo" in name:  # adversarially distilled: few steps, no guidance
        steps, guidance, native = 4, 0.0, 512
    elif "XL" in pipeline_class:  # SDXL: 1024 from its config
        steps, guidance = 30, 6.0
    else:  # SD 1.x (512), SD 2.x (768 or 512 from the config), unknown models (config)
        steps, guidance = 25, 7.0
    display = source.rstrip("/\\")
    if os.path.isdir(display):
        display = os.path.basename(os.path.abspath(display))
    defaults = ModelDefaults(
        steps=settings.steps or steps,
        guidance=settings.guidance if settings.guidance is not None else guidance,
        size=settings.size or native,
        model=display,
        scheduler=str(scheduler),
        name=name,
    )
    return defaults, pipeline_class


def _config(source: str, subfolder: str | None, filename: str) -> dict:
    """One JSON config of a model: from its folder, or from the hub (or the hub's local cache)."""
    folder = Path(source)
    if folder.is_dir():
        path = folder / subfolder / filename if subfolder else folder / filename
    else:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(source, filename, subfolder=subfolder))
    return json.loads(path.read_text(encoding="utf-8"))


def _optional_config(source: str, subfolder: str | None, filename: str) -> dict:
    try:
        return _config(source, subfolder, filename)
    except Exception:  # noqa: BLE001 - a missing part config just leaves the defaults
        return {}


# -- short hashes, as A1111 writes them -------------------------------------------------------------------------------

_hashes: dict[tuple[str, int, float], str] = {}


def file_hash(path: str | Path) -> str:
    """The first 10 hex digits of a file's sha256 (A1111's short hash); remembered per path, size and mtime."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime)
    if key not in _hashes:
        blob = path.resolve().name  # the hub's cache names a large file's blob by its sha256: no need to read it
        if re.fullmatch(r"[0-9a-f]{64}", blob):
            _hashes[key] = blob[:HASH_CHARS]
        else:
            digest = hashlib.sha256()
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
            _hashes[key] = digest.hexdigest()[:HASH_CHARS]
    return _hashes[key]


def weights_file(source: str) -> Path | None:
    """The file a diffusers model's "Model hash" is taken from: its denoiser's weights (unet/ or transformer/
    diffusion_pytorch_model.safetensors, else .bin; for sharded weights, their index), in the folder or the hub
    cache. None when there is no such file here."""
    names = [f"{part}/diffusion_pytorch_model{suffix}" for part in ("unet", "transformer")
             for suffix in (".safetensors", ".bin", ".safetensors.index.json")]
    folder = Path(source)
    for name in names:
        if folder.is_dir():
            if (folder / name).is_file():
                return folder / name
            continue
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(source, name)
        except Exception:  # noqa: BLE001 - not a hub id we know
            return None
        if isinstance(cached, str):
            return Path(cached)
    return None


# -- one loaded model -------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class LoadedModel:
    """A model on the device: its pipelines (image to image shares the text-to-image weights), checker, fast path and
    previewer, and the LoRA adapters loaded into it so far (adapter name = file stem -> short hash)."""

    name: str
    source: str
    defaults: ModelDefaults
    t2i: DiffusionPipeline
    i2i: DiffusionPipeline
    checker: object
    feature_extractor: object
    fast: fastpath.FastPath
    previewer: Callable
    hash: str | None  # the "Model hash" of its weights file, None when there is none to read
    inpaint: DiffusionPipeline | None = None  # zoom and pan's sibling (None with IMAGINE_INPAINT_MODEL)
    adapters: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, name: str, source: str, defaults: ModelDefaults, settings: EngineSettings, device: str,
             dtype: torch.dtype) -> "LoadedModel":
        """Load a model's weights onto the device, as Runner.load did for the one model before."""
        # 1. The text-to-image pipeline, from a hub id or a local folder.
        started = time.perf_counter()
        t2i = from_pretrained(AutoPipelineForText2Image, source, setting=setting_of(name, source, settings),
                              kind="with a diffusers model_index.json", dtype=dtype)

        # 2. Detach the safety checker: we run it ourselves afterwards, so users get flags, not black squares.
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

        # 3. The image-to-image sibling on the same weights (nothing is loaded twice).
        i2i = AutoPipelineForImage2Image.from_pipe(t2i)

        # 4. Placement: whole pipeline on the device, or model CPU offload (each model visits the GPU in turn).
        offload = settings.cpu_offload and device != "cpu"
        if not offload:
            t2i.to(device)
        if checker is not None:
            checker.to("cpu" if offload else device, dtype=torch.float32 if offload else dtype)
        if settings.vae_tiling:
            t2i.vae.enable_tiling()
        for pipe in (t2i, i2i):
            pipe.set_progress_bar_config(disable=not settings.progress_bar)

        # 5. The opt-in fast path and the previewer (engine/fastpath.py, engine/preview.py), per model.
        fast = fastpath.prepare(settings, t2i, i2i, device, dtype)
        previewer = preview.load(settings, t2i, device, dtype)

        # 6. Zoom and pan's inpainting sibling on the same weights, made after the fast path so that it shares its
        #    VAE and compiled modules (and the LoRA layers the UNet gets); unused with IMAGINE_INPAINT_MODEL.
        inpaint = None
        if not settings.inpaint_model:
            inpaint = AutoPipelineForInpainting.from_pipe(t2i)
            inpaint.set_progress_bar_config(disable=not settings.progress_bar)

        weights = weights_file(source)
        model = cls(name, source, defaults, t2i, i2i, checker, feature_extractor, fast, previewer,
                    file_hash(weights) if weights else None, inpaint=inpaint)
        log.info("loaded model %s (%s) in %.1fs", name, source, time.perf_counter() - started)
        return model

    def use_loras(self, loras: tuple[tuple[str, float], ...], lora_dir: str | None) -> None:
        """Make the next call run with exactly these LoRAs at these weights: each is loaded once into this model
        (adapter name = file stem), then the call's set is activated; a call without LoRAs runs with every adapter
        off. A LoRA that does not fit raises JobFailed, and is taken out again."""
        # 1. Load the ones this model hasn't got yet.
        for lora, _ in loras:
            if lora not in self.adapters:
                self._load_lora(lora, lora_dir)
        # 2. Activate this call's set, or switch every adapter off.
        if loras:
            self.t2i.enable_lora()
            self.t2i.set_adapters([lora for lora, _ in loras], adapter_weights=[float(w) for _, w in loras])
        elif self.adapters:
            self.t2i.disable_lora()

    def _load_lora(self, lora: str, lora_dir: str | None) -> None:
        path = Path(lora_dir or "") / f"{lora}{LORA_SUFFIX}"
        if not lora_dir or not path.is_file():
            raise JobFailed(f"There is no LoRA called {lora} here.")
        unhandled = _UnhandledKeys()
        try:
            with unhandled.watching(), warnings.catch_warnings():
                # peft warns that a model with one adapter gets another (several adapters are what we want), and
                # when diffusers takes out an adapter that failed to load (the next call sets its own).
                warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
                warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
                self.t2i.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=lora)
            landed = any(lora in names for names in self.t2i.get_list_adapters().values())
            if unhandled.message or not landed:
                raise ValueError(unhandled.message or "none of its weights name a layer of this model")
        except Exception as e:  # noqa: BLE001 - wrong shapes, keys of another model, not a LoRA file at all
            self._drop_adapter(lora)
            log.warning("LoRA %s does not fit model %s: %s: %s", lora, self.name, type(e).__name__, _first_line(e))
            raise JobFailed(f"The LoRA {lora} doesn't fit the model {self.name}: it was made for another kind of "
                            f"model, or is not a LoRA file ({_lora_reason(e)}).") from None
        self.adapters[lora] = file_hash(path)
        log.info("loaded LoRA %s into model %s", lora, self.name)

    def _drop_adapter(self, lora: str) -> None:
        """Take a half-loaded adapter out again, so that it doesn't linger in the next calls."""
        try:
            if any(lora in names for names in self.t2i.get_list_adapters().values()):
                with warnings.catch_warnings():  # "... was active which is now deleted": the next call sets its own
                    warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
                    self.t2i.delete_adapters(lora)
        except Exception:  # noqa: BLE001 - nothing was injected
            log.debug("no adapter %s to delete in model %s", lora, self.name, exc_info=True)

    def close(self) -> None:
        """Drop every reference this object holds to the model's weights (the caller frees the memory)."""
        self.t2i = self.i2i = self.inpaint = self.checker = self.feature_extractor = None
        self.fast = self.previewer = None
        self.adapters = {}


class _UnhandledKeys(logging.Handler):
    """Catches diffusers' warning that a LoRA's weights name layers the model hasn't got (e.g. an SDXL LoRA on
    SD 1.5): diffusers loads such a LoRA partly and only warns; we would rather fail the job and say so."""

    _LOGGER = "diffusers.utils.peft_utils"

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.message: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "unexpected keys" in text or "missing keys" in text:
            self.message = text.split(":", 1)[0]

    @contextlib.contextmanager
    def watching(self):
        logger = logging.getLogger(self._LOGGER)
        logger.addHandler(self)
        try:
            yield
        finally:
            logger.removeHandler(self)


# -- the registry ---------------------------------------------------------------------------------------------------


class Models:
    """The configured models: every one's defaults from the start, at most max_loaded of them on the device."""

    def __init__(self, settings: EngineSettings, device: str, dtype: torch.dtype) -> None:
        self.settings = settings
        self.device = device
        self.dtype = dtype
        self.sources = dict(settings.model_sources())
        self.default = next(iter(self.sources))
        self.defaults: dict[str, ModelDefaults] = {}
        self.pipeline_classes: dict[str, str] = {}
        for name, source in self.sources.items():
            self.defaults[name], self.pipeline_classes[name] = read_defaults(name, source, settings)
        self.loras = settings.lora_names()
        self.max_loaded = settings.max_loaded_models
        self.max_batch = 1  # jobs per call, for the compile warm-up; the runner sets it before loading
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()  # least recently used first
        self.loaded: tuple[str, ...] = ()  # names on the device, most recently used first (read by the event loop)

    def name_of(self, requested: str) -> str:
        """The configured name a request means ("" = the default); JobFailed listing the models if there is none."""
        name = (requested or self.default).lower()
        if name not in self.sources:
            raise JobFailed(f"There is no model called {requested} here; the models are "
                            f"{', '.join(list(self.sources)[:25])}.")
        return name

    def get(self, requested: str, on_load: Callable[[str], None] | None = None) -> LoadedModel:
        """The loaded model of that name (most recently used from now on). If it isn't loaded: on_load(name) first,
        then the least recently used models go (their memory freed) until it fits, and it loads."""
        name = self.name_of(requested)
        model = self._loaded.get(name)
        if model is None:
            if on_load is not None:
                on_load(name)
            while len(self._loaded) >= self.max_loaded:
                self.evict(next(iter(self._loaded)))
            model = LoadedModel.load(name, self.sources[name], self.defaults[name], self.settings, self.device,
                                     self.dtype)
            self._loaded[name] = model
            # With IMAGINE_COMPILE, compile this model's menu now: no member waits for a compile mid-job.
            model.fast.warm_up(model.t2i, native=model.defaults.size, guidance=model.defaults.guidance,
                               max_batch=self.max_batch)
            log.info("fast path: %s, previews: %s (model %s)", model.fast.describe(), model.previewer.name, name)
        self._loaded.move_to_end(name)
        self.loaded = tuple(reversed(self._loaded))
        return model

    def evict(self, name: str) -> None:
        """Take a model off the device and give its memory back."""
        model = self._loaded.pop(name)
        self.loaded = tuple(reversed(self._loaded))
        model.close()
        del model
        free_memory(self.device)
        log.info("unloaded model %s", name)

    def close(self) -> None:
        for name in list(self._loaded):
            self.evict(name)


# -- helpers --------------------------------------------------------------------------------------------------------


def free_memory(device: str) -> None:
    """Collect what nothing references any more, and hand it back: the CUDA/MPS cache, and on Linux glibc's free
    heap pages (malloc_trim), so that the process's RSS comes back down after a model goes."""
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    elif device == "mps":
        torch.mps.empty_cache()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _find_libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _find_libc()


def _lora_reason(error: BaseException) -> str:
    """The telling line of a failed LoRA load: the first shape that doesn't match, else the first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    telling = next((line for line in lines if line.startswith("size mismatch")), lines[0] if lines else "")
    telling = re.sub(r"copying a param with shape torch.Size\((\[[^]]*\])\) from checkpoint, the shape in current "
                     r"model is torch.Size\((\[[^]]*\])\)", r"\1 in the LoRA, \2 in the model", telling)
    return f"{type(error).__name__}: {telling[:200]}"


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [""])[0]
