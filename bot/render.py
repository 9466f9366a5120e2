"""What a job looks like on Discord: message text, embeds, files and buttons for each stage of its life."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import discord
from PIL import Image

from bot.store import Job
from bot.views import PAN_ARROWS, cancel_view, grid_view, upscale_view
from engine import images

COLOUR = discord.Colour.blurple()
KIND_TITLES = {
    "imagine": "Imagine",
    "reroll": "Reroll",
    "variation": "Variations",
    "upscale": "Upscale",
    "zoom": "Zoom Out",
    "pan": "Pan",
}
GRID_KINDS = ("imagine", "reroll", "variation", "zoom", "pan")


@dataclass
class Shown:
    """Everything one edit of a job's message carries."""

    content: str
    embed: discord.Embed | None = None
    files: list[discord.File] = field(default_factory=list)
    view: discord.ui.View | None = None


def headline(job: Job) -> str:
    prompt = job.recipe["prompt"]
    if len(prompt) > 300:
        prompt = prompt[:299] + "…"
    prompt = discord.utils.escape_markdown(prompt)
    source = ""
    if job.kind == "upscale":
        source = f" — Upscaled image #{job.recipe['source_index']}"
    elif job.kind == "variation":
        source = f" — Variations ({job.recipe.get('strength_name', 'strong')}) of image #{job.recipe['source_index']}"
    elif job.kind == "reroll":
        source = " — Reroll"
    elif job.kind in ("zoom", "pan"):
        source = f" — {title(job)}"
    if job.recipe.get("remix"):
        source += " — Remix"
    if job.recipe.get("image_prompt") and job.kind in ("imagine", "reroll"):
        source += f" — from your image (--iw {job.recipe.get('image_weight', 1):g})"
    return f"**{prompt}**{source} — <@{job.user_id}>"


def title(job: Job) -> str:
    """What kind of job it is, as its embed's author says: "Imagine", "Zoom Out 2x", "Pan ➡️"..."""
    if job.kind == "zoom":
        return f"Zoom Out {job.recipe['zoom']:g}x"
    if job.kind == "pan":
        return f"Pan {PAN_ARROWS[job.recipe['pan']]}"
    return KIND_TITLES[job.kind]


def queued(job: Job, position: int | None, *, restarted: bool = False, lost: bool = False,
           unreachable: bool = False) -> Shown:
    if position and position > 1:
        wait = f"Waiting to start: #{position} in the queue"
    else:
        wait = "Waiting to start: next in the queue"
    if restarted:
        wait += " (the bot restarted; your job kept its place)"
    if unreachable:
        wait += " (the GPU workers can't be reached right now; your job keeps its place and runs when they're back)"
    elif lost:
        wait += " (the GPU worker making it went away; your job is first in line again)"
    return Shown(f"{headline(job)} ({wait})", view=cancel_view(job.id))


def progress(job: Job, step: int, total: int, preview: bytes | None) -> Shown:
    percent = round(100 * step / total) if total else 0
    files = [discord.File(io.BytesIO(preview), filename="preview.png")] if preview else []
    return Shown(f"{headline(job)} ({percent}% · step {step}/{total})", files=files, view=cancel_view(job.id))


def failed(job: Job) -> Shown:
    return Shown(f"{headline(job)}\n❌ {job.error or 'The job failed.'}")


def cancelled(job: Job) -> Shown:
    return Shown(f"{headline(job)}\n🚫 Cancelled.")


def finished(job: Job, pictures: list[bytes], grid: bytes | None, *, parent: Job | None, nsfw_ok: bool) -> Shown:
    """The final message: the grid (or the upscaled image), an embed with the recipe, and the next buttons.

    `pictures` are the engine's single PNGs and `grid` its 2x2 grid PNG (for grid kinds); every picture posted keeps
    the recipe in its "parameters" chunk, blurred or not, so that other Stable Diffusion tools can read it."""
    result = job.result or {}
    flags = list(result.get("nsfw") or [False] * len(pictures))
    flagged = [i for i, bad in enumerate(flags, start=1) if bad]
    blurred = bool(flagged) and not nsfw_ok

    # 1. Flagged images are never posted plainly: spoilers where NSFW is allowed, blurred spoilers elsewhere.
    notes = []
    if blurred:
        pictures = [images.blur(p) if bad else p for p, bad in zip(pictures, flags)]  # blur keeps the recipe
        notes.append(f"Image {_listing(flagged)} may be NSFW and {'is' if len(flagged) == 1 else 'are'} blurred: NSFW isn't allowed here.")
    elif flagged:
        notes.append(f"Image {_listing(flagged)} may be NSFW and {'is' if len(flagged) == 1 else 'are'} hidden behind a spoiler.")

    # 2. One picture to post: the engine's 2x2 grid (rebuilt from the blurred images, with its recipe, if some
    #    were blurred), or the single upscaled image.
    if job.kind in GRID_KINDS:
        if grid is None:
            raise ValueError(f"a {job.kind} job is shown with its grid")
        picture = grid
        if blurred:
            tiles = [Image.open(io.BytesIO(p)) for p in pictures]
            picture = images.png_bytes(images.make_grid(tiles), images.read_parameters(grid))
        name = "grid.png"
        view = grid_view(job.id)
    else:
        picture, name = pictures[0], "upscale.png"
        view = upscale_view(job.id)
    if flagged:
        name = "SPOILER_" + name

    # 3. The embed says how it was made and where it came from.
    recipe = job.recipe
    embed = discord.Embed(colour=COLOUR, description=_clip(recipe["prompt"], 4000))
    remix = "Remix · " if recipe.get("remix") else ""
    embed.set_author(name=f"{remix}{title(job)} · job #{job.id}")
    seeds = result.get("seeds") or recipe["seeds"]
    embed.add_field(name="Seed" if len(seeds) == 1 else "Seeds", value=", ".join(map(str, seeds)))
    embed.add_field(name="Size", value=f"{result.get('width', recipe['width'])}×{result.get('height', recipe['height'])}")
    embed.add_field(name="Steps · Guidance", value=f"{recipe['steps']} · {recipe['guidance']:g}")
    if recipe.get("negative_prompt"):
        embed.add_field(name="Negative prompt", value=_clip(recipe["negative_prompt"], 1000), inline=False)
    if parent is not None:
        index = None if job.kind in ("zoom", "pan") else recipe.get("source_index")  # the upscale: one image
        embed.add_field(name="From", value=_link_to(parent, index), inline=False)
    if recipe.get("image_prompt") and "image_weight" in recipe:
        weight = f"--iw {recipe['image_weight']:g} · strength {recipe['strength']:g}"
        embed.add_field(name="Image weight", value=weight)
    embed.add_field(name="Model", value=_clip(result.get("model", "?"), 256))
    embed.add_field(name="Time", value=f"{result.get('elapsed', 0):.1f} s")
    if result.get("prompt_truncated"):
        notes.append("The prompt was longer than the model can read; its end was cut.")
    if notes:
        embed.set_footer(text=" ".join(notes))
    if not flagged:
        embed.set_image(url=f"attachment://{name}")
    return Shown(headline(job), embed=embed, files=[discord.File(io.BytesIO(picture), filename=name)], view=view)


def _listing(numbers: list[int]) -> str:
    return ", ".join(f"#{n}" for n in numbers)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _link_to(parent: Job, index: int | None) -> str:
    what = f"image #{index} of job #{parent.id}" if index else f"job #{parent.id}"
    if parent.message_id and parent.guild_id:
        url = f"https://discord.com/channels/{parent.guild_id}/{parent.channel_id}/{parent.message_id}"
        return f"[{what}]({url})"
    return what
