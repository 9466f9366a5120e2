"""The opt-in fast path: a replacement VAE, channels_last weights, and torch.compile with a warmed-up shape menu.

    IMAGINE_VAE_MODEL=madebyollin/sdxl-vae-fp16-fix   SDXL's own VAE overflows in float16, so diffusers decodes it
                                                      in float32 (slower, and twice the memory); this one does not
    IMAGINE_CHANNELS_LAST=true                        UNet and VAE weights in channels_last: faster convolutions on
                                                      CUDA tensor cores
    IMAGINE_COMPILE=true                              torch.compile the UNet and the VAE decoder (below)
    IMAGINE_COMPILE_ASPECTS=1:1,2:3                   the aspects to warm up (default: every aspect the bot offers)

How compiling works here, and why:

- The UNet's and the VAE decoder's `forward` are replaced, in place on the module objects, by a `CompiledForward`.
  The image-to-image pipeline (made with `from_pipe`) holds the same module objects, so it runs them too.
- `FastPath.warm_up` runs the real text-to-image pipeline for 2 steps at every shape of the menu: the native size in
  every warm-up aspect, at 1..max_batch jobs of 4 images per call. All compiling happens there, at start-up, and is
  logged with its time; the first member pays nothing.
- The batch dimension is marked dynamic while warming up, so one compiled UNet serves all batch sizes of an aspect
  (torch splits it at a few sizes where its kernels change, e.g. 16 and 64 images), instead of one static compile
  per (aspect, batch): 11 compiles rather than 44 for 4 jobs per call, each a long one for an SD UNet. Height and
  width stay static: kernels made for one size are the fast ones, and the menu is what keeps their number bounded.
- On the menu shapes the VAE decoder decodes one image at a time (it treats every image on its own anyway), so one
  static decoder graph per aspect serves any batch (VAE slicing, on for batches, decodes that way too).
- After warm-up, a call off the menu (an upscale, a free-form --ar) runs the original forward: nothing compiles
  while members wait. A call on the menu runs the compiled code under `set_stance("fail_on_recompile")`; should torch
  still want to compile (a batch of 1, a guard nobody foresaw), that call runs uncompiled, and so does that shape
  from then on, with one log line.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter

import torch
from diffusers import AutoencoderKL, DiffusionPipeline

from engine.jobs import size_for_aspect
from engine.loading import from_pretrained
from engine.settings import EngineSettings

log = logging.getLogger(__name__)

GRID_IMAGES = 4  # images per job: a 2x2 grid
WARM_UP_STEPS = 2  # denoising steps per warm-up call (then a decode): every kind of call a job makes
RECOMPILE_PREFIX = "Detected recompile"  # how torch's set_stance("fail_on_recompile") error begins


class CompiledForward:
    """Stands in for `module.forward`: compiled code on the warmed-up shapes, the original forward on all others.

    `calls` counts both ("compiled", "eager"), for logs and tests.
    """

    def __init__(self, name: str, module: torch.nn.Module, *, one_image_at_a_time: bool, pixels_per_latent: int,
                 log_off_menu: bool) -> None:
        self.name = name
        self.eager = module.forward
        self.compiled = torch.compile(self.eager)
        self.one_image_at_a_time = one_image_at_a_time
        self.pixels_per_latent = pixels_per_latent
        self.log_off_menu = log_off_menu
        self.menu: set[tuple[int, int]] = set()  # latent (height, width) warmed up
        self.calls: Counter[str] = Counter()
        self.warming = False
        self._uncompiled: set[tuple[int, int, int]] = set()  # (height, width, batch) on the menu that missed
        self._reported: set[tuple[int, int]] = set()
        module.forward = self

    def __call__(self, *args, **kwargs):
        if not args or not isinstance(args[0], torch.Tensor) or args[0].ndim != 4:
            self.calls["eager"] += 1  # not the (batch, channels, height, width) latents every diffusers pipeline passes
            return self.eager(*args, **kwargs)
        sample, args = args[0], args[1:]
        height, width = sample.shape[-2:]
        if self.warming:
            self.menu.add((height, width))
            return self._compiled(sample, args, kwargs)
        if (height, width) not in self.menu or (height, width, sample.shape[0]) in self._uncompiled:
            if (height, width) not in self.menu and self.log_off_menu and (height, width) not in self._reported:
                self._reported.add((height, width))
                log.info("%s: %dx%d is not on the compile menu (IMAGINE_COMPILE_ASPECTS); it runs uncompiled",
                         self.name, width * self.pixels_per_latent, height * self.pixels_per_latent)
            self.calls["eager"] += 1
            return self.eager(sample, *args, **kwargs)
        try:
            with torch.compiler.set_stance("fail_on_recompile"):
                output = self._compiled(sample, args, kwargs)
        except RuntimeError as e:
            if not str(e).startswith(RECOMPILE_PREFIX):
                raise
            self._uncompiled.add((height, width, sample.shape[0]))
            log.info("%s: %dx%d at batch %d is not covered by the warmed-up code; it runs uncompiled (%s)",
                     self.name, width * self.pixels_per_latent, height * self.pixels_per_latent, sample.shape[0],
                     _first_guard_failure(str(e)))
            self.calls["eager"] += 1
            return self.eager(sample, *args, **kwargs)
        self.calls["compiled"] += 1
        return output

    def _compiled(self, sample: torch.Tensor, args: tuple, kwargs: dict):
        # One memory layout for the compiled code: image-to-image latents come from the VAE encoder in NHWC strides.
        sample = sample.contiguous()
        if self.one_image_at_a_time:
            return torch.cat([self.compiled(image, *args, **kwargs) for image in sample.split(1)])
        if self.warming:
            _mark_batch_dynamic(sample, args, kwargs)
        return self.compiled(sample, *args, **kwargs)


class FastPath:
    """What prepare() set up, the warm-up, and the start-up log line that says so."""

    def __init__(self, settings: EngineSettings, compiled: list[CompiledForward], vae_note: str) -> None:
        self.settings = settings
        self.compiled = compiled
        self.vae_note = vae_note
        self.warmed: list[tuple[int, int]] = []  # (width, height) sizes
        self.batches: range = range(0)
        self.warm_up_seconds: float | None = None

    @property
    def unet(self) -> CompiledForward | None:
        return next((c for c in self.compiled if c.name == "unet"), None)

    @property
    def decoder(self) -> CompiledForward | None:
        return next((c for c in self.compiled if c.name == "vae decoder"), None)

    def warm_up(self, pipe: DiffusionPipeline, *, native: int, guidance: float, max_batch: int) -> None:
        """Compile every menu shape now: the native size in every warm-up aspect, at 1..max_batch jobs per call."""
        if not self.compiled:
            return
        sizes = list(dict.fromkeys(size_for_aspect(native, aspect) for aspect in self.settings.warm_up_aspects()))
        batches = range(1, max_batch + 1)
        started = time.perf_counter()
        # Every aspect is one more cache entry of the same compiled function (two or three with batch sizes);
        # torch's automatic dynamic shapes would turn height and width dynamic at the second aspect: keep them static.
        patched = torch._dynamo.config.patch(automatic_dynamic_shapes=False,
                                             recompile_limit=max(8, 4 * len(sizes) * len(batches)))
        with patched, torch.compiler.set_stance("default"), self._warming():
            for width, height in sizes:
                for jobs in batches:
                    try:
                        pipe(
                            prompt=[""] * jobs, width=width, height=height, num_inference_steps=WARM_UP_STEPS,
                            guidance_scale=guidance, num_images_per_prompt=GRID_IMAGES, output_type="np",
                            generator=[torch.Generator("cpu").manual_seed(n) for n in range(jobs * GRID_IMAGES)],
                        )
                    except Exception as e:
                        first_line = (str(e).splitlines() or [""])[0][:300]
                        raise RuntimeError(
                            f"IMAGINE_COMPILE failed while warming up {width}x{height} at {jobs} job(s) per call "
                            f"({type(e).__name__}: {first_line}); turn IMAGINE_COMPILE off, or check that torch's "
                            "compiler works here (Triton on CUDA, a C++ compiler on CPU)"
                        ) from e
        self.warmed, self.batches = sizes, batches
        self.warm_up_seconds = time.perf_counter() - started
        log.info("compiled %s for %d size(s) at %s job(s) per call in %.1fs",
                 " and ".join(c.name for c in self.compiled), len(sizes), _span(batches), self.warm_up_seconds)

    @contextlib.contextmanager
    def _warming(self):
        for compiled in self.compiled:
            compiled.warming = True
        try:
            yield
        finally:
            for compiled in self.compiled:
                compiled.warming = False

    def describe(self) -> str:
        """One line for the start-up log: every fast-path setting and what it did."""
        if self.compiled and self.warm_up_seconds is not None:
            sizes = ", ".join(f"{w}x{h}" for w, h in self.warmed)
            compiled = (f"compile on ({' and '.join(c.name for c in self.compiled)}; {sizes} at "
                        f"{_span(self.batches)} job(s) per call, warmed up in {self.warm_up_seconds:.1f}s)")
        else:
            compiled = "compile on (nothing to compile in this model)" if self.settings.compile else "compile off"
        channels_last = "channels_last on" if self.settings.channels_last else "channels_last off"
        return f"{compiled}, {channels_last}, VAE: {self.vae_note}"


def prepare(settings: EngineSettings, t2i: DiffusionPipeline, i2i: DiffusionPipeline, device: str,
            dtype: torch.dtype) -> FastPath:
    """Apply the fast-path settings to the placed pipelines (compiling itself waits for FastPath.warm_up)."""
    offload = settings.cpu_offload and device != "cpu"

    # 1. A replacement VAE (e.g. SDXL's float16 fix), shared by both pipelines, with the same tiling switch.
    if settings.vae_model:
        _replace_vae(settings.vae_model, t2i, i2i, device, dtype, offload)
    vae_note = settings.vae_model or "the model's"
    if "XL" in type(t2i).__name__ and t2i.vae.dtype == torch.float16 and getattr(t2i.vae.config, "force_upcast", False):
        vae_note += (", decoding in float32 (SDXL's VAE overflows in float16; "
                     "IMAGINE_VAE_MODEL=madebyollin/sdxl-vae-fp16-fix decodes in float16)")

    # 2. channels_last: convolutions read NHWC, the layout CUDA tensor cores want.
    denoiser = getattr(t2i, "unet", None)
    if settings.channels_last:
        for model in (denoiser, t2i.vae):
            if model is not None:
                model.to(memory_format=torch.channels_last)

    # 3. Compiled forwards for the UNet and the VAE decoder; the warm-up compiles them.
    compiled = []
    if settings.compile:
        if not hasattr(torch.compiler, "set_stance"):
            raise RuntimeError(f"IMAGINE_COMPILE needs torch 2.6 or newer, this is {torch.__version__}")
        scale = getattr(t2i, "vae_scale_factor", 8)
        if denoiser is not None:
            compiled.append(CompiledForward("unet", denoiser, one_image_at_a_time=False, pixels_per_latent=scale,
                                            log_off_menu=True))
        else:
            log.warning("IMAGINE_COMPILE: %s has no UNet; only the VAE decoder is compiled", type(t2i).__name__)
        if getattr(t2i.vae, "decoder", None) is not None:
            compiled.append(CompiledForward("vae decoder", t2i.vae.decoder, one_image_at_a_time=True,
                                            pixels_per_latent=scale, log_off_menu=False))
    return FastPath(settings, compiled, vae_note)


def _replace_vae(name: str, t2i: DiffusionPipeline, i2i: DiffusionPipeline, device: str, dtype: torch.dtype,
                 offload: bool) -> None:
    vae = from_pretrained(AutoencoderKL, name, setting=f"IMAGINE_VAE_MODEL={name!r}",
                          kind="of a diffusers AutoencoderKL", dtype=dtype)
    old = t2i.vae
    for key in ("latent_channels", "scaling_factor"):
        ours, theirs = getattr(old.config, key, None), getattr(vae.config, key, None)
        if ours != theirs:
            raise RuntimeError(f"IMAGINE_VAE_MODEL={name!r} does not fit {type(t2i).__name__}: its {key} is "
                               f"{theirs}, the model's VAE has {ours}")
    if getattr(old, "use_tiling", False):
        vae.enable_tiling()
    if not offload:
        vae.to(device)
    for pipe in (t2i, i2i):
        pipe.register_modules(vae=vae)


def _mark_batch_dynamic(sample: torch.Tensor, args: tuple, kwargs: dict) -> None:
    """Mark dim 0 of every input with the sample's batch size (latents, text embeddings, SDXL's extra conditions)."""
    values = [sample, *args, *kwargs.values()]
    for value in list(values):
        if isinstance(value, dict):
            values.extend(value.values())
    for value in values:
        if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == sample.shape[0]:
            torch._dynamo.maybe_mark_dynamic(value, 0)


def _first_guard_failure(message: str) -> str:
    failures = [line.strip(" -") for line in message.splitlines() if line.strip().startswith("- ")]
    return failures[0] if failures else message.splitlines()[0]


def _span(batches: range) -> str:
    return f"{batches.start}-{batches.stop - 1}" if len(batches) > 1 else str(batches.start)
