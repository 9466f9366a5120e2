"""Turn what a member typed into a complete, checked recipe.

Midjourney habits work inside the prompt (``--ar 16:9 --seed 42 --no text, watermark --steps 30 --guidance 6``).
A member's suffix (/prefer suffix) is added to every prompt they send, flags and all. When a value is given more
than once, the most deliberate one wins: a slash-command option (what Discord shows in the command's summary), then
a flag in the prompt, then a flag in the suffix, then (for an image prompt) the picture's own aspect ratio, then the
member's default aspect ratio (/settings), then the model's default.

`--zoom` (more than 1, at most 2) is only read in the Custom Zoom box of an upscaled image; a prompt anywhere else
(/imagine, a suffix, the Remix box) that carries it is refused with a sentence that says where it works.
"""

from __future__ import annotations

import math
import random
import re
import unicodedata
from dataclasses import asdict, dataclass

from bot.errors import UserError, quoted
from engine.jobs import ASPECT_CHOICES, ModelDefaults, size_for_aspect

MAX_ASPECT = 3.0  # widest (or tallest) ratio allowed for a free-form --ar
MAX_PROMPT = 1000
MAX_NEGATIVE = 1000
MAX_SUFFIX = 500
MAX_SEED = 2**32 - 1
MAX_GUIDANCE = 30.0
IMAGES_PER_GRID = 4
MAX_STEPS = 150  # what /imagine and a Remix accept; a channel's max_steps limit is checked at admission
MAX_IMAGE_WEIGHT = 3.0
MAX_ZOOM = 2.0  # Custom Zoom: more than 1x, at most 2x

FLAG_ALIASES = {
    "ar": "aspect",
    "aspect": "aspect",
    "seed": "seed",
    "no": "negative",
    "steps": "steps",
    "guidance": "guidance",
    "cfg": "guidance",
    "iw": "image_weight",
}
_FLAG = re.compile(r"(?:^|\s)--([A-Za-z]+)\b")


class BadInput(UserError):
    """Something the member typed is not allowed; the message says what is."""


@dataclass(frozen=True)
class Recipe:
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    seeds: tuple[int, ...]
    aspect: str = "1:1"
    # Image prompts only: how closely the result keeps the picture (--iw), and the img2img strength it gives.
    image_weight: float | None = None
    strength: float | None = None
    zoom: float | None = None  # Custom Zoom only: --zoom

    def to_dict(self) -> dict:
        recipe = asdict(self) | {"seeds": list(self.seeds)}
        if self.image_weight is None:
            del recipe["image_weight"], recipe["strength"]
        if self.zoom is None:
            del recipe["zoom"]
        return recipe


def image_strength(weight: float) -> float:
    """Denoising strength for an image weight: 0.9 at --iw 0 down to 0.3 at --iw 3, linear."""
    return round(0.9 - 0.2 * weight, 4)


def split_flags(text: str, *, zoom: bool = False) -> tuple[str, dict[str, str]]:
    """``"a fox --ar 16:9 --no snow"`` -> ``("a fox", {"aspect": "16:9", "negative": "snow"})``; `--zoom` only with
    `zoom` (the Custom Zoom box)."""
    matches = list(_FLAG.finditer(text))
    prompt = text[: matches[0].start()] if matches else text
    flags: dict[str, str] = {}
    for match, following in zip(matches, matches[1:] + [None]):
        name = match.group(1).lower()
        key = "zoom" if zoom and name == "zoom" else FLAG_ALIASES.get(name)
        if name == "zoom" and key is None:
            raise BadInput("`--zoom` is not an option of a prompt: it works in the Custom Zoom box, under an "
                           "upscaled image (U1–U4, then Custom Zoom).")
        if key is None:
            allowed = ", ".join(f"--{n}" for n in ("ar", "seed", "no", "steps", "guidance", "iw"))
            raise BadInput(f"`--{quoted(name, 20)}` is not an option I know. Allowed in the prompt: {allowed}.")
        if key in flags:
            raise BadInput(f"`--{quoted(name, 20)}` is given twice; keep one.")
        end = following.start() if following else len(text)
        flags[key] = text[match.end() : end].strip()
    return prompt.strip(), flags


def parse_aspect(text: str) -> tuple[int, int]:
    allowed = ", ".join(ASPECT_CHOICES)
    match = re.fullmatch(r"\s*(\d{1,3})\s*:\s*(\d{1,3})\s*", text)
    if not match:
        raise BadInput(f"Aspect ratio must look like `16:9`, got `{quoted(text)}`. Common ones: {allowed}.")
    w, h = int(match.group(1)), int(match.group(2))
    if w == 0 or h == 0 or max(w / h, h / w) > MAX_ASPECT:
        raise BadInput(
            f"Aspect ratio `{quoted(text)}` is too extreme: the longer side may be at most 3 times the shorter. "
            f"Common ones: {allowed}."
        )
    return w, h


def _int(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
        raise BadInput(f"{name} must be a whole number from {low} to {high}, got `{quoted(raw)}`.") from None
    if not low <= value <= high:
        raise BadInput(f"{name} must be from {low} to {high}, got {value}.")
    return value


def _float(name: str, raw: str, low: float, high: float) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError, OverflowError):  # OverflowError: float(10**400)
        raise BadInput(f"{name} must be a number from {low:g} to {high:g}, got `{quoted(raw)}`.") from None
    if not (low <= value <= high) or math.isnan(value):
        raise BadInput(f"{name} must be from {low:g} to {high:g}, got {value:g}.")
    return value


def new_seeds(first: int | None = None) -> tuple[int, ...]:
    """Four seeds in a row: a member who names a seed gets the same four images again."""
    if first is None:
        first = random.randrange(MAX_SEED - IMAGES_PER_GRID)
    return tuple((first + i) % (MAX_SEED + 1) for i in range(IMAGES_PER_GRID))


def parse_imagine(
    text: str,
    defaults: ModelDefaults,
    *,
    negative: str | None = None,
    aspect: str | None = None,
    seed: int | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    max_steps: int = 150,
    suffix: str = "",
    default_aspect: str | None = None,
    image_aspect: str | None = None,
    custom_zoom: bool = False,
) -> Recipe:
    """Resolve a prompt with inline flags, the member's suffix and defaults, and slash-command options into a full
    recipe (the order is in this module's docstring).

    With an image prompt (`image_aspect`: the picture's own ratio, e.g. "4:3"), --iw is allowed, and the picture's
    ratio is used unless --ar or the aspect option names another (the picture is then centre-cropped to that); a
    member's default aspect never crops a picture.

    With `custom_zoom` (the Custom Zoom box), `--zoom` is read too (more than 1, at most 2) and required.
    """
    prompt, flags = split_flags(_printable(text), zoom=custom_zoom)
    if not any(unicodedata.category(c)[0] in "LNPS" for c in prompt):  # blank, or only invisible marks
        raise BadInput("The prompt is empty: describe the picture before any `--` options.")
    if suffix:
        suffix_text, suffix_flags = parse_suffix(suffix)
        prompt = f"{prompt} {suffix_text}" if suffix_text else prompt
        flags = suffix_flags | flags
    if len(prompt) > MAX_PROMPT:
        raise BadInput(f"The prompt is {len(prompt)} characters long; the limit is {MAX_PROMPT}.")
    negative_text = _printable(negative if negative is not None else flags.get("negative", "")).strip()
    if len(negative_text) > MAX_NEGATIVE:
        raise BadInput(f"The negative prompt is {len(negative_text)} characters long; the limit is {MAX_NEGATIVE}.")

    aspect_text = aspect or flags.get("aspect") or image_aspect or default_aspect or "1:1"
    ratio = parse_aspect(aspect_text)
    width, height = size_for_aspect(defaults.size, f"{ratio[0]}:{ratio[1]}")

    seed_value = seed if seed is not None else flags.get("seed")
    if seed_value is not None:
        seed_value = _int("Seed", seed_value, 0, MAX_SEED)

    steps_value = steps if steps is not None else flags.get("steps")
    steps_value = defaults.steps if steps_value is None else _int("Steps", steps_value, 1, max_steps)

    guidance_value = guidance if guidance is not None else flags.get("guidance")
    guidance_value = defaults.guidance if guidance_value is None else _float("Guidance", guidance_value, 0, MAX_GUIDANCE)

    weight = None
    if "image_weight" in flags and image_aspect is None:
        raise BadInput("`--iw` sets how closely the result keeps an image prompt; attach one with the `image` option.")
    if image_aspect is not None:
        raw = flags.get("image_weight")
        weight = 1.0 if raw is None else _float("Image weight (--iw)", raw, 0, MAX_IMAGE_WEIGHT)

    return Recipe(
        prompt=prompt,
        negative_prompt=negative_text,
        width=width,
        height=height,
        steps=steps_value,
        guidance=guidance_value,
        seeds=new_seeds(seed_value),
        aspect=f"{ratio[0]}:{ratio[1]}",
        image_weight=weight,
        strength=None if weight is None else image_strength(weight),
        zoom=parse_zoom(flags.get("zoom")) if custom_zoom else None,
    )


def parse_zoom(raw: str | None) -> float:
    """The value of `--zoom` in the Custom Zoom box: more than 1 (a zoom out), at most 2."""
    if raw is None:
        raise BadInput("Custom Zoom needs `--zoom` with how far to zoom out: more than 1, at most 2 "
                       "(e.g. `--zoom 1.5`).")
    try:
        value = float(raw)
    except (TypeError, ValueError, OverflowError):
        raise BadInput(f"Zoom must be a number more than 1 and at most 2 (e.g. `--zoom 1.5`), "
                       f"got `{quoted(raw)}`.") from None
    if not 1.0 < value <= MAX_ZOOM:  # NaN too
        raise BadInput(f"Zoom must be more than 1 and at most 2 (e.g. `--zoom 1.5`), got {value:g}.")
    return value


def parse_suffix(text: str) -> tuple[str, dict[str, str]]:
    """A member's suffix split into its text and flags, checked like a prompt's (its values by parse_imagine)."""
    text = _printable(text).strip()
    if len(text) > MAX_SUFFIX:
        raise BadInput(f"The suffix is {len(text)} characters long; the limit is {MAX_SUFFIX}.")
    try:
        return split_flags(text)
    except BadInput as error:
        raise BadInput(f"In your suffix (/prefer suffix): {error}") from None


def remix_text(recipe: dict, defaults: ModelDefaults) -> str:
    """A job's prompt with the flags that remake it (``a red fox --ar 3:2 --no text``), for a member to edit.

    Parsed again by parse_imagine, it gives the same recipe but the seeds: steps and guidance appear only when they
    differ from the model's defaults, the aspect always (a member's default aspect must not change it)."""
    parts = [recipe["prompt"], f"--ar {recipe.get('aspect', '1:1')}"]
    if recipe.get("negative_prompt"):
        parts.append(f"--no {recipe['negative_prompt']}")
    if recipe.get("steps", defaults.steps) != defaults.steps:
        parts.append(f"--steps {recipe['steps']}")
    if recipe.get("guidance", defaults.guidance) != defaults.guidance:
        parts.append(f"--guidance {recipe['guidance']:.15g}")
    return " ".join(parts)


def _printable(text: str) -> str:
    """Line breaks and tabs become spaces; other control characters (NUL, escape sequences) are dropped."""
    return "".join(" " if c in "\t\n\r\v\f" else c for c in text
                   if c in "\t\n\r\v\f" or unicodedata.category(c) != "Cc")


def find_banned(prompt: str, banned: list[str]) -> str | None:
    """The first banned word or phrase that appears in the prompt as whole words, ignoring case."""
    lowered = prompt.lower()
    for word in banned:
        if re.search(rf"(?<!\w){re.escape(word.lower())}(?!\w)", lowered):
            return word
    return None
