"""What crosses the engine boundary: requests in, progress and results out, two exceptions. No torch here."""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("imagine", "reroll", "variation", "upscale", "zoom", "pan")
PAN_DIRECTIONS = ("left", "right", "up", "down")  # which way a pan extends the canvas
MAX_ZOOM = 2.0  # Zoom Out goes from just over 1x to 2x
# The aspect ratios the bot offers; the engine warms these up when IMAGINE_COMPILE is on.
ASPECT_CHOICES = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "9:21", "21:9")
MAX_SEED = 2**63 - 1  # fits a signed SQLite INTEGER
MAX_LORAS = 3  # LoRAs one job may use
LORA_WEIGHT_RANGE = (-2.0, 2.0)  # a LoRA's weight, inclusive: 1 is the LoRA as trained, 0 turns it off


class JobFailed(Exception):
    """A job could not be done; str(e) is a sentence a Discord user understands."""


class JobCancelled(Exception):
    """A job was cancelled before it finished (while queued, or between two denoising steps)."""


class JobLost(Exception):
    """The worker running a job went away before it finished (a Ray replica's process was killed, its node lost):
    the job itself may be fine, so the bot puts it back at the front of the queue. worker_died=False: the cluster
    could not be reached, which says nothing about the job, so the run does not count as an attempt."""

    def __init__(self, message: str, *, worker_died: bool = True) -> None:
        super().__init__(message)
        self.worker_died = worker_died


@dataclass(frozen=True)
class ModelDefaults:
    steps: int
    guidance: float
    size: int  # native side in px, e.g. 512 for SD 1.5, 768 SD 2.x, 1024 SDXL, 512 sd-turbo
    model: str  # display source (hub id or folder name)
    scheduler: str  # scheduler class name
    name: str = ""  # the configured name (IMAGINE_MODELS), what Request.model, recipes and the bot use


@dataclass(frozen=True)
class Request:
    """One job. Validated when built: a bad value raises ValueError with a sentence that says what to change.

    imagine/reroll: text to image, one image per seed (4 seeds give a 2x2 grid).
    variation: img2img of init_image (PNG bytes) at `strength`, one image per seed, at width x height.
    upscale: one seed; init_image at 2x its size (Lanczos, then a low-strength detail pass).
    For upscale, the size comes from init_image; width/height are not used. An image prompt is a variation of
    the member's picture.
    zoom/pan: outpainting (engine/ops/outpaint.py). init_image is the source at its own size; width x height is the
    canvas; `outpaint_box` says where the source goes in it (zoom: 1 < zoom <= 2, centred at 1/zoom its size; pan:
    "left"/"right"/"up"/"down", flush against the opposite edge). One image per seed, as imagine; no strength.
    """

    kind: str
    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 25
    guidance: float = 7.0
    seeds: tuple[int, ...] = ()
    init_image: bytes | None = None
    strength: float | None = None
    image_weight: float | None = None  # an image prompt's --iw (it gave `strength`); recorded in the PNGs
    zoom: float | None = None  # kind zoom: how far to zoom out, 1 < zoom <= 2; recorded in the PNGs
    pan: str | None = None  # kind pan: one of PAN_DIRECTIONS; recorded in the PNGs
    model: str = ""  # a configured model name (Engine.models); "" = the default model
    loras: tuple[tuple[str, float], ...] = ()  # (name, weight): LoRA file stems in IMAGINE_LORA_DIR (Engine.loras)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value % 8 or value < 64:
                raise ValueError(f"{name} must be a multiple of 8 and at least 64, got {value}")
        if not 1 <= self.steps <= 150:
            raise ValueError(f"steps must be between 1 and 150, got {self.steps}")
        if not 0.0 <= self.guidance <= 30.0:
            raise ValueError(f"guidance must be between 0 and 30, got {self.guidance}")
        wanted = "1 seed" if self.kind == "upscale" else "1 to 4 seeds"
        if not (len(self.seeds) == 1 if self.kind == "upscale" else 1 <= len(self.seeds) <= 4):
            raise ValueError(f"{self.kind} needs {wanted}, got {len(self.seeds)}")
        for seed in self.seeds:
            if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
                raise ValueError(f"seeds must be whole numbers from 0 to 2**63-1, got {seed!r}")
        if self.kind in ("variation", "upscale", "zoom", "pan") and not self.init_image:
            raise ValueError(f"{self.kind} needs init_image (the PNG bytes of the chosen image)")
        if self.kind in ("imagine", "reroll") and self.init_image is not None:
            raise ValueError(f"{self.kind} takes no init_image; use variation or upscale")
        if self.strength is not None and not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], e.g. 0.35 subtle or 0.7 strong, got {self.strength}")
        if self.kind == "variation" and self.strength is None:
            raise ValueError("variation needs strength, e.g. 0.35 (subtle) or 0.7 (strong)")
        if self.kind in ("zoom", "pan") and self.strength is not None:
            raise ValueError(f"{self.kind} takes no strength: the new area is painted from noise")
        if self.kind == "zoom":
            if self.zoom is None or isinstance(self.zoom, bool) or not 1.0 < self.zoom <= MAX_ZOOM:
                raise ValueError(f"zoom must be greater than 1 and at most {MAX_ZOOM:g}, e.g. 1.5 or 2, "
                                 f"got {self.zoom!r}")
        elif self.zoom is not None:
            raise ValueError(f"only a zoom job takes zoom, not {self.kind}")
        if self.kind == "pan":
            if self.pan not in PAN_DIRECTIONS:
                raise ValueError(f"pan must be one of {', '.join(PAN_DIRECTIONS)}, got {self.pan!r}")
        elif self.pan is not None:
            raise ValueError(f"only a pan job takes pan, not {self.kind}")
        # From a stored recipe the LoRAs come as JSON lists: keep them as (name, weight) tuples, hashable.
        object.__setattr__(self, "loras", tuple(tuple(lora) for lora in self.loras))
        if any(len(lora) != 2 for lora in self.loras):
            raise ValueError(f"loras must be (name, weight) pairs, got {self.loras!r}")
        if len(self.loras) > MAX_LORAS:
            raise ValueError(f"a job takes at most {MAX_LORAS} LoRAs, got {len(self.loras)}")
        low, high = LORA_WEIGHT_RANGE
        for name, weight in self.loras:
            if not isinstance(name, str) or not name:
                raise ValueError(f"a LoRA is named by its file stem, got {name!r}")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not low <= weight <= high:
                raise ValueError(f"LoRA {name}'s weight must be from {low:g} to {high:g}, got {weight!r}")
        names = [name for name, _ in self.loras]
        if len(set(names)) != len(names):
            raise ValueError(f"a LoRA is named twice: {', '.join(names)}")


@dataclass(frozen=True)
class Progress:
    job_id: object
    step: int  # steps done, 1..total (0, with total 0, while its model loads: see `loading`)
    total: int  # denoising steps this job runs (for img2img: steps * strength)
    preview: bytes | None  # small JPEG (<= 256 px side) every preview_every steps, else None
    loading: str | None = None  # a model's name: it is being loaded for this job (sent once, with step 0, total 0)


@dataclass(frozen=True)
class Result:
    images: tuple[bytes, ...]  # PNG bytes of each single image, with its recipe in the "parameters" chunk
    grid: bytes | None  # 2x2 grid PNG when there are 4 images, else None
    seeds: tuple[int, ...]
    nsfw: tuple[bool, ...]  # per-image safety-checker flag (all False without a checker)
    width: int  # of single images
    height: int
    prompt_truncated: bool  # the prompt was longer than the text encoder window and got cut
    elapsed: float  # seconds of generation
    model: str  # the configured name of the model that made it (ModelDefaults.name)
    scheduler: str


def outpaint_box(kind: str, source_size: tuple[int, int], canvas_size: tuple[int, int], *,
                 zoom: float | None = None, pan: str | None = None) -> tuple[int, int, int, int]:
    """Where a zoom or pan puts its source in the canvas: (left, top, width, height) in canvas pixels.

    zoom: the W x H source at round(W/zoom) x round(H/zoom), centred (the canvas may have another aspect).
    pan: the source scaled by s = the canvas's kept side / the source's kept side (height for left/right, width for
    up/down; s is 1 unless the canvas was scaled down to fit), flush against the edge opposite the direction
    (pan right: on the left edge), centred on the other axis.

    >>> outpaint_box("zoom", (512, 512), (512, 512), zoom=2)
    (128, 128, 256, 256)
    >>> outpaint_box("pan", (512, 512), (768, 512), pan="right")
    (0, 0, 512, 512)
    """
    source_width, source_height = source_size
    canvas_width, canvas_height = canvas_size
    if kind == "zoom":
        if zoom is None or not 1.0 < zoom <= MAX_ZOOM:
            raise ValueError(f"zoom must be greater than 1 and at most {MAX_ZOOM:g}, got {zoom!r}")
        width, height = round(source_width / zoom), round(source_height / zoom)
        left, top = (canvas_width - width) // 2, (canvas_height - height) // 2
    elif kind == "pan":
        if pan not in PAN_DIRECTIONS:
            raise ValueError(f"pan must be one of {', '.join(PAN_DIRECTIONS)}, got {pan!r}")
        if pan in ("left", "right"):
            width, height = round(source_width * canvas_height / source_height), canvas_height
        else:
            width, height = canvas_width, round(source_height * canvas_width / source_width)
        left = {"left": canvas_width - width, "right": 0}.get(pan, (canvas_width - width) // 2)
        top = {"up": canvas_height - height, "down": 0}.get(pan, (canvas_height - height) // 2)
        if (width, height) == (canvas_width, canvas_height):
            raise ValueError(f"a pan {pan} needs a canvas larger than the source that way, got the source "
                             f"{source_width}x{source_height} and the canvas {canvas_width}x{canvas_height}")
    else:
        raise ValueError(f"only zoom and pan jobs place a source in a canvas, not {kind}")
    if left < 0 or top < 0 or left + width > canvas_width or top + height > canvas_height:
        raise ValueError(f"the source {source_width}x{source_height} at {width}x{height} does not fit in the canvas "
                         f"{canvas_width}x{canvas_height}; zoom out further, or choose an aspect ratio closer to "
                         "the source's")
    return left, top, width, height


def size_for_aspect(native: int, aspect: str) -> tuple[int, int]:
    """Width and height for an aspect ratio like "16:9", keeping about native*native pixels, multiples of 8.

    >>> size_for_aspect(512, "16:9")
    (680, 384)
    """
    try:
        a, b = (int(part) for part in aspect.split(":"))
        if a <= 0 or b <= 0:
            raise ValueError
    except ValueError:
        raise ValueError(f"aspect ratio must look like 16:9 (two whole numbers), got {aspect!r}") from None
    if max(a, b) / min(a, b) > 4:
        raise ValueError(f"aspect ratio must be at most 4:1 either way, got {aspect}")
    area = native * native
    width = (area * a / b) ** 0.5
    height = width * b / a
    return max(64, round(width / 8) * 8), max(64, round(height / 8) * 8)
