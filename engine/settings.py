"""Engine settings: one frozen object, read once from the environment (or .env) by the entry point."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping

from engine.jobs import ASPECT_CHOICES, size_for_aspect

DEVICES = ("auto", "cuda", "mps", "cpu")
DTYPES = ("auto", "float16", "bfloat16", "float32")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
# A model's name as members type it (--model NAME): lowercase letters, digits and . _ -, at most 32 characters.
MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
LORA_SUFFIX = ".safetensors"


@dataclass(frozen=True)
class EngineSettings:
    model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # IMAGINE_MODEL: hub id or local folder
    # IMAGINE_MODELS: "name=source,name=source" (hub ids or local folders); the first is the default. Unset: the one
    # model of IMAGINE_MODEL, named after the last part of its source (model_name_for).
    models: str | None = None
    lora_dir: str | None = None  # IMAGINE_LORA_DIR: a folder of LoRA .safetensors files, each named by its file stem
    max_loaded_models: int = 1  # IMAGINE_MAX_LOADED_MODELS: models kept on the device; the least recently used goes
    device: str = "auto"  # IMAGINE_DEVICE: auto|cuda|mps|cpu (auto = cuda, then mps, then cpu)
    dtype: str = "auto"  # IMAGINE_DTYPE: auto|float16|bfloat16|float32 (auto = fp16 on cuda, else fp32)
    cpu_offload: bool = False  # IMAGINE_CPU_OFFLOAD: model CPU offload (saves GPU memory, a little slower)
    vae_tiling: bool = False  # IMAGINE_VAE_TILING (always on for the upscale detail pass)
    safety_checker: bool = True  # IMAGINE_SAFETY_CHECKER: flag images when the model ships a checker
    steps: int | None = None  # IMAGINE_STEPS (None: per-model default)
    guidance: float | None = None  # IMAGINE_GUIDANCE (None: per-model default)
    size: int | None = None  # IMAGINE_SIZE: native side in px (None: per-model default)
    upscaler_model: str | None = None  # IMAGINE_UPSCALER_MODEL: optional dedicated upscaler pipeline
    inpaint_model: str | None = None  # IMAGINE_INPAINT_MODEL: optional dedicated inpainting model for zoom and pan
    upscale_strength: float = 0.3  # IMAGINE_UPSCALE_STRENGTH: img2img strength of the upscale detail pass
    preview_every: int = 5  # IMAGINE_PREVIEW_EVERY: steps between previews (0 = none)
    max_batch: int | None = None  # IMAGINE_MAX_BATCH: jobs per pipeline call (1 = no batching; None = per device/model)
    # The fast path, all opt-in (engine/fastpath.py, engine/preview.py):
    compile: bool = False  # IMAGINE_COMPILE: torch.compile the UNet and VAE decoder, warmed up at start-up
    compile_aspects: str | None = None  # IMAGINE_COMPILE_ASPECTS: "1:1,16:9" to warm up (None: every offered one)
    channels_last: bool = False  # IMAGINE_CHANNELS_LAST: UNet and VAE in channels_last memory format
    vae_model: str | None = None  # IMAGINE_VAE_MODEL: replacement VAE, e.g. madebyollin/sdxl-vae-fp16-fix
    preview_model: str | None = None  # IMAGINE_PREVIEW_MODEL: tiny autoencoder for previews, e.g. madebyollin/taesd
    progress_bar: bool = False  # diffusers' tqdm bar; the CLI turns it on

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.steps is not None and not 1 <= self.steps <= 150:
            raise ValueError(f"steps must be between 1 and 150, got {self.steps}")
        if self.size is not None and (self.size < 64 or self.size % 8):
            raise ValueError(f"size must be a multiple of 8 and at least 64, got {self.size}")
        if not 0.0 < self.upscale_strength <= 1.0:
            raise ValueError(f"upscale_strength must be in (0, 1], got {self.upscale_strength}")
        if self.max_batch is not None and not 1 <= self.max_batch <= 16:
            raise ValueError(f"max_batch must be from 1 (no batching) to 16 jobs per call, got {self.max_batch}")
        if self.preview_every < 0:
            raise ValueError(f"preview_every must be 0 (no previews) or more, got {self.preview_every}")
        if self.compile and self.cpu_offload:
            raise ValueError("compile cannot be used with CPU offload: offload moves the weights between devices on "
                             "every call, which compiled code cannot follow; turn one of them off")
        if self.max_loaded_models < 1:
            raise ValueError(f"max_loaded_models must be at least 1, got {self.max_loaded_models}")
        self.warm_up_aspects()  # a bad list fails here, at start-up
        self.model_sources()  # and a bad model list here

    def model_sources(self) -> tuple[tuple[str, str], ...]:
        """The configured models as (name, source) pairs, the default first: IMAGINE_MODELS, else IMAGINE_MODEL.

        >>> EngineSettings(models="sd15=stable-diffusion-v1-5/stable-diffusion-v1-5, Turbo=stabilityai/sd-turbo"
        ...                ).model_sources()
        (('sd15', 'stable-diffusion-v1-5/stable-diffusion-v1-5'), ('turbo', 'stabilityai/sd-turbo'))
        """
        if not self.models or not self.models.strip():
            return ((model_name_for(self.model), self.model),)
        pairs: list[tuple[str, str]] = []
        for part in self.models.split(","):
            name, equals, source = (piece.strip() for piece in part.partition("="))
            if not equals:
                raise ValueError(f"models must be name=source pairs separated by commas, e.g. "
                                 f"sd15=stable-diffusion-v1-5/stable-diffusion-v1-5,turbo=stabilityai/sd-turbo; "
                                 f"got {part.strip()!r}")
            name = name.lower()
            if not MODEL_NAME.fullmatch(name):
                raise ValueError(f"models: {name!r} is not a usable name: a name is 1 to 32 lowercase letters, digits, "
                                 f"'.', '_' or '-', starting with a letter or digit")
            if not source:
                raise ValueError(f"models: {name} has no source (a hub id or a local folder after '{name}=')")
            if any(name == seen for seen, _ in pairs):
                raise ValueError(f"models: the name {name} is given twice")
            pairs.append((name, source))
        return tuple(pairs)

    def lora_names(self) -> tuple[str, ...]:
        """The LoRAs members may use: the file stems of IMAGINE_LORA_DIR's .safetensors files, sorted."""
        if not self.lora_dir:
            return ()
        folder = Path(self.lora_dir)
        if not folder.is_dir():
            raise ValueError(f"lora_dir must be a folder of LoRA .safetensors files, got {self.lora_dir!r}")
        return tuple(sorted(path.name[:-len(LORA_SUFFIX)] for path in folder.iterdir()
                            if path.name.endswith(LORA_SUFFIX) and path.is_file()))

    def warm_up_aspects(self) -> tuple[str, ...]:
        """The aspect ratios the compile warm-up covers: compile_aspects, or every aspect the bot offers."""
        if not self.compile_aspects:
            return ASPECT_CHOICES
        aspects = tuple(part.strip() for part in self.compile_aspects.split(","))
        for aspect in aspects:
            try:
                size_for_aspect(512, aspect)
            except ValueError as e:
                raise ValueError(f"compile_aspects must be aspect ratios separated by commas, e.g. 1:1,2:3,16:9 "
                                 f"({e})") from None
        return aspects

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "EngineSettings":
        """Read IMAGINE_* keys (IMAGINE_MODEL, IMAGINE_STEPS, ...); missing or empty keys keep their defaults.

        A bad value raises ValueError with one readable line, e.g. "IMAGINE_STEPS must be a whole number, got 'abc'".
        """
        values = {}
        for field in fields(cls):
            key = f"IMAGINE_{field.name.upper()}"
            raw = env.get(key, "").strip()
            if not raw:
                continue
            kind = field.type.replace(" | None", "")
            if kind == "bool":
                if raw.lower() not in _TRUE | _FALSE:
                    raise ValueError(f"{key} must be true or false, got {raw!r}")
                values[field.name] = raw.lower() in _TRUE
            elif kind == "int":
                try:
                    values[field.name] = int(raw)
                except ValueError:
                    raise ValueError(f"{key} must be a whole number, got {raw!r}") from None
            elif kind == "float":
                try:
                    values[field.name] = float(raw)
                except ValueError:
                    raise ValueError(f"{key} must be a number, got {raw!r}") from None
            else:
                values[field.name] = raw.lower() if field.name in ("device", "dtype") else raw
        try:
            return cls(**values)
        except ValueError as e:
            # Name the environment key, not the field: "IMAGINE_DEVICE must be one of ..."
            message = str(e)
            name = message.split(" ", 1)[0]
            raise ValueError(f"IMAGINE_{name.upper()} {message.split(' ', 1)[1]}") from None


def model_name_for(source: str) -> str:
    """The name of a model given only by its source: the last part of the hub id or folder, lowercased, with other
    characters as '-' and cut to 32 ("stabilityai/sd-turbo" -> "sd-turbo", "/models/My Model" -> "my-model")."""
    last = os.path.basename(source.rstrip("/\\")) or source
    name = re.sub(r"[^a-z0-9_.-]+", "-", last.lower()).lstrip("_.-")[:32].rstrip("_.-")
    return name or "default"
