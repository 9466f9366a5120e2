"""Admit a job: acknowledge the interaction, check the channel's limits, and queue it atomically."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import discord

from bot.backend import offered
from bot.errors import UserError
from bot.parsing import (MAX_ASPECT, MAX_STEPS, find_banned, new_seeds, parse_aspect, parse_imagine, remix_text,
                         resolve_model, split_flags)
from bot.replies import tell, token_expiry
from bot.store import Job, Limits, Preferences
from engine.jobs import outpaint_box, size_for_aspect

if TYPE_CHECKING:
    from bot.bot import ImagineBot

STRENGTHS = {"subtle": 0.35, "strong": 0.7}
ZOOMS = {"z2": 2.0, "z15": 1.5}  # Zoom Out 2x, Zoom Out 1.5x; Custom Zoom ("zc") asks in its own modal
PANS = {"pl": "left", "pr": "right", "pu": "up", "pd": "down"}
OUTPAINTS = (*ZOOMS, "zc", *PANS)  # the buttons under an upscale that paint around it
PAN_GROWTH = 1.5  # a pan adds half the source's side in its direction


class Refused(UserError):
    """The channel's limits don't allow this job."""


def check_limits(kind: str, recipe: dict, limits: Limits, banned: list[str]) -> None:
    if not limits.enabled:
        raise Refused("I'm switched off in this channel; a moderator can turn me on with `/limits set enabled:True`.")
    word = find_banned(recipe["prompt"], banned)
    if word is not None:
        raise Refused(f"Your prompt contains “{word}”, which this server doesn't allow.")
    if recipe["steps"] > limits.max_steps:
        raise Refused(f"{recipe['steps']} steps is above this channel's maximum of {limits.max_steps}.")
    if kind != "upscale" and max(recipe["width"], recipe["height"]) > limits.max_side:
        raise Refused(
            f"{recipe['width']}×{recipe['height']} is larger than this channel allows "
            f"(at most {limits.max_side} px a side); try a squarer aspect ratio."
        )


async def submit(interaction: discord.Interaction[ImagineBot], kind: str, recipe: dict, *, parent: Job | None = None,
                 limits: Limits | None = None) -> Job | None:
    """Queue a job for the member behind this interaction, or tell them privately why not. `limits`: the channel's,
    when the caller has just read them.

    The channel's limits, banned words and the member's rate limit are checked before anything is shown (a few
    SQLite reads, well within Discord's 3 s), so a refusal is one ephemeral message, never a public "thinking…"
    taken back. Only a job that will be queued is deferred publicly; the admission itself checks again atomically,
    and a member who loses that race to their own other request is still told privately."""
    bot = interaction.client
    channel = interaction.channel
    try:
        if limits is None:
            limits = await bot.store.limits_for(interaction.guild_id, interaction.channel_id)
        if kind in ("zoom", "pan"):
            recipe = fit_canvas(kind, recipe, limits.max_side)
        check_limits(kind, recipe, limits, await bot.store.banned_words(interaction.guild_id))
        await bot.store.check_admission(interaction.user.id, interaction.channel_id, limits)
    except UserError as error:
        await tell(interaction, str(error))
        return None
    if not interaction.response.is_done():
        await interaction.response.defer(thinking=True)

    try:
        age_restricted = isinstance(channel, discord.abc.GuildChannel) and getattr(channel, "nsfw", False)
        job = await bot.store.admit(
            kind=kind,
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            recipe=recipe | {"nsfw_ok": bool(limits.nsfw_allowed and age_restricted)},
            limits=limits,
            parent_id=parent.id if parent else None,
            interaction_token=interaction.token,
            token_expires_at=token_expiry(interaction),
        )
    except UserError as error:
        await tell(interaction, str(error))
        return None

    bot.runner.wake()  # an idle engine starts at once; the "waiting" edit below is then skipped as stale
    await bot.messages.queued(job, unreachable=bot.engine.capacity() == 0)  # no worker up: say so at once
    return job


async def clicked_job(interaction: discord.Interaction[ImagineBot], job_id: int) -> Job:
    """The finished job of this server that a button names, in one read; otherwise a refusal (a UserError).

    Called before anything is shown, so that a stale or forged click is answered privately, never with a public
    "thinking…". A job of another server is unknown here: no image of one server may reach another.
    """
    job = await interaction.client.store.get_job(job_id)
    if job is None or job.guild_id != interaction.guild_id:
        raise UserError("I can't find the job of that button in this server; /imagine starts a new one.")
    if job.status != "done":
        raise UserError(f"Job #{job.id} isn't finished, so its buttons can't be used yet.")
    return job


REMIXABLE = ("r", "v", "vs", "vx", *ZOOMS, *PANS)  # with Remix on, these buttons first open the "Remix" modal


async def click(interaction: discord.Interaction[ImagineBot], action: str, job_id: int, index: int) -> None:
    """A grid or upscale button: make the follow-up job from the clicked job's stored recipe and images.

    With the member's Remix mode on, the first response to 🔄, the variation buttons, Zoom Out and the pans is
    instead the "Remix" modal (a modal must be the first response: nothing is deferred before it); its submission
    comes back to `remix`. Custom Zoom always opens its own modal, which comes back to `custom_zoom`."""
    bot = interaction.client
    parent = await clicked_job(interaction, job_id)
    await _check_index(interaction, parent, action, index)
    if action == "zc":
        text = f"{remix_text(parent.recipe, offered(bot.engine))} --zoom 2"
        await interaction.response.send_modal(zoom_modal(parent.id, text))
        return
    preferences = Preferences()
    if action in REMIXABLE:  # U1-U4 need none: no Remix, no variation mode
        preferences = await bot.store.preferences(interaction.guild_id, interaction.user.id)
    if preferences.remix:
        text = remix_text(parent.recipe, offered(bot.engine))
        await interaction.response.send_modal(remix_modal(action, parent.id, index, text))
        return
    kind, recipe = follow_up(parent, action, index, preferences)
    # The job's model again, or the default's if the server no longer has it (a job from before several models).
    if bot.engine.models:  # unknown while no worker has answered yet: the runner falls back the same way
        recipe["model"] = resolve_model(None, bot.engine.models, fallback=recipe.get("model"))
    await submit(interaction, kind, recipe, parent=parent)  # deferred publicly there, once the limits allow it


async def remix(interaction: discord.Interaction[ImagineBot], action: str, job_id: int, index: int, text: str) -> None:
    """The "Remix" modal was submitted: the button's job again, with the prompt the member edited.

    The text is parsed and checked like /imagine text (its flags, the channel's limits, banned words); the suffix
    isn't added again, since the prompt in the modal already carries it. A variation keeps its source's size. The
    text names the job's model unless it is the default (remix_text), so the channel's default model doesn't apply.
    """
    bot = interaction.client
    parent = await clicked_job(interaction, job_id)
    await _check_index(interaction, parent, action, index)
    preferences = await bot.store.preferences(interaction.guild_id, interaction.user.id)
    edited = parse_imagine(text, offered(bot.engine), max_steps=MAX_STEPS, default_aspect=preferences.aspect,
                           loras=bot.engine.loras)
    kind, recipe = follow_up(parent, action, index, preferences)
    canvas = dict(recipe)
    seeded = "seed" in split_flags(text)[1]  # new seeds, as the button would, unless the member typed --seed
    recipe |= {k: v for k, v in edited.to_dict().items() if k != "seeds" or seeded} | {"remix": True}
    if kind == "variation":  # made from the source image: its size, whatever --ar says
        recipe |= {"width": parent.recipe["width"], "height": parent.recipe["height"],
                   "aspect": parent.recipe.get("aspect", "1:1")}
    elif kind in ("zoom", "pan"):  # the button's canvas, whatever --ar says (Custom Zoom is the one that reshapes)
        recipe |= {k: canvas[k] for k in ("width", "height", "aspect") if k in canvas}
    await submit(interaction, kind, recipe, parent=parent)


async def custom_zoom(interaction: discord.Interaction[ImagineBot], job_id: int, text: str) -> None:
    """The "Custom Zoom" modal was submitted: zoom out of the upscale by the --zoom it says, with its prompt.

    Parsed and checked like a Remix (its flags, the channel's limits, banned words); a new --ar changes the canvas
    to that shape, around the source in its centre."""
    bot = interaction.client
    parent = await clicked_job(interaction, job_id)
    await _check_index(interaction, parent, "zc", 1)
    edited = parse_imagine(text, offered(bot.engine), max_steps=MAX_STEPS, custom_zoom=True,
                           loras=bot.engine.loras)
    flags = split_flags(text, zoom=True)[1]
    aspect = flags.get("aspect")
    if aspect is not None and _ratio(edited.aspect) == _ratio(parent.recipe.get("aspect", "1:1")):
        aspect = None  # the --ar it already had: the source's own size
    kind, recipe = outpaint(parent, zoom=edited.zoom, aspect=edited.aspect if aspect else None)
    typed = {k: v for k, v in edited.to_dict().items()
             if k in ("prompt", "negative_prompt", "steps", "guidance", "model", "loras")}
    if "seed" in flags:  # new seeds, as the buttons would, unless the member typed --seed
        typed["seeds"] = list(edited.seeds)
    await submit(interaction, kind, recipe | typed, parent=parent)


async def _check_index(interaction: discord.Interaction[ImagineBot], parent: Job, action: str, index: int) -> None:
    store = interaction.client.store
    if action in ("u", "v", "vs", "vx"):
        if parent.images_pruned:
            await store.image(parent.id, index)  # raises ImagesGone: says how long they're kept
        if not 1 <= index <= parent.image_count:
            raise UserError(f"Job #{parent.id} has no image #{index}.")
    if action in OUTPAINTS:
        if parent.kind != "upscale":
            raise UserError("Zoom Out and Pan work on an upscaled image: press U1–U4 first.")
        # They start from the grid cell the upscale came from (at its grid size), not from the upscale.
        source = await store.get_job(parent.recipe["source_job"])
        if source is None or source.images_pruned:
            await store.image(parent.recipe["source_job"], parent.recipe["source_index"])  # says why it's gone


def follow_up(parent: Job, action: str, index: int, preferences: Preferences) -> tuple[str, dict]:
    """The kind and recipe of the job a button makes from `parent`: its model and LoRAs too."""
    kept = ("prompt", "negative_prompt", "steps", "guidance", "aspect", "model", "loras")
    recipe = {k: parent.recipe[k] for k in kept if k in parent.recipe}
    # An upscale's recipe keeps the size of its source, so variations of it come out at the grid's size.
    size = {"width": parent.recipe["width"], "height": parent.recipe["height"]}
    if action == "r":
        kind = "reroll" if parent.kind in ("imagine", "reroll") else parent.kind
        kept = ("source_job", "source_index", "strength", "strength_name", "image_prompt", "image_weight",
                "zoom", "pan", "source_width", "source_height")  # 🔄 on a zoom or pan repeats it
        source = {k: parent.recipe[k] for k in kept if k in parent.recipe}
        return kind, recipe | size | source | {"seeds": list(new_seeds())}
    if action == "u":
        seed = (parent.result or {}).get("seeds", parent.recipe["seeds"])[index - 1]
        return "upscale", recipe | size | {"seeds": [seed], "source_job": parent.id, "source_index": index}
    if action in ZOOMS or action in PANS:
        return outpaint(parent, zoom=ZOOMS.get(action), pan=PANS.get(action))
    # V1-V4 use the member's variation mode; Vary (Subtle) and Vary (Strong) say theirs.
    name = {"vs": "subtle", "vx": "strong"}.get(action, preferences.variation)
    return "variation", recipe | size | {
        "seeds": list(new_seeds()),
        "source_job": parent.id,
        "source_index": index,
        "strength": STRENGTHS[name],
        "strength_name": name,
    }


def outpaint(parent: Job, *, zoom: float | None = None, pan: str | None = None,
             aspect: str | None = None) -> tuple[str, dict]:
    """The kind and recipe of a Zoom Out (`zoom`, and with Custom Zoom maybe a new `aspect`) or a Pan of an upscale.

    The source is the grid cell the upscale came from, at its grid size W×H (which the upscale's recipe keeps).
    Zoom Out: a canvas of W×H, or of the new aspect with about W×H pixels. Pan: the canvas grows by half the
    source's side that way. submit() then scales the canvas down to the channel's max_side if it must."""
    kept = ("prompt", "negative_prompt", "steps", "guidance", "aspect", "model", "loras")
    recipe = {k: parent.recipe[k] for k in kept if k in parent.recipe}
    width, height = parent.recipe["width"], parent.recipe["height"]
    if pan in ("left", "right"):
        canvas = (_round8(PAN_GROWTH * width), height)
    elif pan in ("up", "down"):
        canvas = (width, _round8(PAN_GROWTH * height))
    elif aspect is not None:
        canvas = size_for_aspect(round(math.sqrt(width * height)), aspect)
    else:
        canvas = (width, height)
    if pan is not None or aspect is not None:  # its own shape, for the Remix and Custom Zoom boxes of what follows
        recipe["aspect"] = aspect or _aspect_of(*canvas, fallback=recipe.get("aspect", "1:1"))
    recipe |= {
        "width": canvas[0],
        "height": canvas[1],
        "seeds": list(new_seeds()),
        "source_job": parent.recipe["source_job"],
        "source_index": parent.recipe["source_index"],
        "source_width": width,
        "source_height": height,
    }
    return ("zoom", recipe | {"zoom": zoom}) if pan is None else ("pan", recipe | {"pan": pan})


def fit_canvas(kind: str, recipe: dict, max_side: int) -> dict:
    """A zoom's or pan's recipe with its canvas scaled down, in multiples of 8, to at most `max_side` a side; refused
    (Refused) when the source would not fit in it, e.g. a Custom Zoom of little zoom into a very different --ar."""
    width, height = recipe["width"], recipe["height"]
    if max(width, height) > max_side:
        scale = max_side / max(width, height)
        width, height = max(64, int(width * scale) // 8 * 8), max(64, int(height * scale) // 8 * 8)
    source = (recipe["source_width"], recipe["source_height"])
    try:
        outpaint_box(kind, source, (width, height), zoom=recipe.get("zoom"), pan=recipe.get("pan"))
    except ValueError:
        raise Refused(
            f"At --zoom {recipe.get('zoom', 1):g} the picture doesn't fit in a {width}×{height} canvas; zoom out "
            "further (a larger --zoom) or choose an --ar closer to the picture's."
        ) from None
    return recipe | {"width": width, "height": height}


def _round8(value: float) -> int:
    return max(64, round(value / 8) * 8)


def _ratio(aspect: str) -> tuple[int, int]:
    a, b = parse_aspect(aspect)
    return a // math.gcd(a, b), b // math.gcd(a, b)


def _aspect_of(width: int, height: int, *, fallback: str) -> str:
    """"3:2" for 96×64: the reduced ratio, when a prompt's --ar may say it (see parsing.parse_aspect)."""
    a, b = width // math.gcd(width, height), height // math.gcd(width, height)
    return f"{a}:{b}" if max(a, b) < 1000 and max(a / b, b / a) <= MAX_ASPECT else fallback


REMIX_TEMPLATE = (r"imagine:remix:(?P<action>r|v|vs|vx|z2|z15|pl|pr|pu|pd):(?P<job>[1-9][0-9]{0,17})"
                  r":(?P<index>[0-4])")
ZOOM_TEMPLATE = r"imagine:zoom:(?P<job>[1-9][0-9]{0,17})"
REMIX_INPUT = "prompt"


def remix_modal(action: str, job_id: int, index: int, text: str) -> discord.ui.Modal:
    """The "Remix" modal: the job's prompt with its flags, to edit. Its submission is answered by the Buttons cog
    from the custom_id alone (a restart between opening and submitting loses nothing)."""
    return _prompt_modal("Remix", f"imagine:remix:{action}:{job_id}:{index}", text,
                         "Edit the prompt and its flags (--ar --no --steps --guidance --seed --model --lora).")


def zoom_modal(job_id: int, text: str) -> discord.ui.Modal:
    """The "Custom Zoom" modal: the upscale's prompt with `--zoom 2`, to edit (the zoom, the prompt, --ar). Answered
    from its custom_id alone, as the Remix modal is."""
    return _prompt_modal("Custom Zoom", f"imagine:zoom:{job_id}", text,
                         "--zoom: more than 1, at most 2. A new --ar reshapes the canvas around the picture.")


def _prompt_modal(title: str, custom_id: str, text: str, description: str) -> discord.ui.Modal:
    """A modal of one prompt box (REMIX_INPUT) holding `text`, open for 15 minutes."""
    modal = discord.ui.Modal(title=title, custom_id=custom_id, timeout=15 * 60)
    modal.add_item(discord.ui.Label(
        text="Prompt",
        description=description,
        component=discord.ui.TextInput(custom_id=REMIX_INPUT, style=discord.TextStyle.paragraph,
                                       default=text[:MAX_REMIX_TEXT], max_length=MAX_REMIX_TEXT),
    ))
    return modal


MAX_REMIX_TEXT = 4000  # Discord's most for a text input
