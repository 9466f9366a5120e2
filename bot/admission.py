"""Admit a job: acknowledge the interaction, check the channel's limits, and queue it atomically."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord

from bot.errors import UserError
from bot.parsing import MAX_STEPS, find_banned, new_seeds, parse_imagine, remix_text, resolve_model, split_flags
from bot.replies import tell, token_expiry
from bot.store import Job, Limits, Preferences

if TYPE_CHECKING:
    from bot.bot import ImagineBot

STRENGTHS = {"subtle": 0.35, "strong": 0.7}


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
    when the caller has just read them."""
    bot = interaction.client
    if not interaction.response.is_done():
        await interaction.response.defer(thinking=True)

    channel = interaction.channel
    try:
        if limits is None:
            limits = await bot.store.limits_for(interaction.guild_id, interaction.channel_id)
        check_limits(kind, recipe, limits, await bot.store.banned_words(interaction.guild_id))
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
    await bot.messages.queued(job)
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


REMIXABLE = ("r", "v", "vs", "vx")  # with Remix on, these buttons first open the "Remix" modal


async def click(interaction: discord.Interaction[ImagineBot], action: str, job_id: int, index: int) -> None:
    """A grid or upscale button: make the follow-up job from the clicked job's stored recipe and images.

    With the member's Remix mode on, the first response to 🔄 and the variation buttons is instead the "Remix"
    modal (a modal must be the first response: nothing is deferred before it); its submission comes back to
    `remix`."""
    bot = interaction.client
    parent = await clicked_job(interaction, job_id)
    await _check_index(interaction, parent, action, index)
    preferences = Preferences()
    if action in REMIXABLE:  # U1-U4 need none: no Remix, no variation mode
        preferences = await bot.store.preferences(interaction.guild_id, interaction.user.id)
    if preferences.remix:
        text = remix_text(parent.recipe, bot.engine.models)
        await interaction.response.send_modal(remix_modal(action, parent.id, index, text))
        return
    await interaction.response.defer(thinking=True)  # this click starts a job: its message is public
    kind, recipe = follow_up(parent, action, index, preferences)
    # The job's model again, or the default's if the server no longer has it (a job from before several models).
    recipe["model"] = resolve_model(None, bot.engine.models, fallback=recipe.get("model"))
    await submit(interaction, kind, recipe, parent=parent)


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
    edited = parse_imagine(text, bot.engine.models, max_steps=MAX_STEPS, default_aspect=preferences.aspect,
                           loras=bot.engine.loras)
    kind, recipe = follow_up(parent, action, index, preferences)
    seeded = "seed" in split_flags(text)[1]  # new seeds, as the button would, unless the member typed --seed
    recipe |= {k: v for k, v in edited.to_dict().items() if k != "seeds" or seeded} | {"remix": True}
    if kind == "variation":  # made from the source image: its size, whatever --ar says
        recipe |= {"width": parent.recipe["width"], "height": parent.recipe["height"],
                   "aspect": parent.recipe.get("aspect", "1:1")}
    await submit(interaction, kind, recipe, parent=parent)


async def _check_index(interaction: discord.Interaction[ImagineBot], parent: Job, action: str, index: int) -> None:
    if action in ("u", "v", "vs", "vx"):
        if parent.images_pruned:
            await interaction.client.store.image(parent.id, index)  # raises ImagesGone: says how long they're kept
        if not 1 <= index <= parent.image_count:
            raise UserError(f"Job #{parent.id} has no image #{index}.")


def follow_up(parent: Job, action: str, index: int, preferences: Preferences) -> tuple[str, dict]:
    """The kind and recipe of the job a button makes from `parent`: its model and LoRAs too."""
    kept = ("prompt", "negative_prompt", "steps", "guidance", "aspect", "model", "loras")
    recipe = {k: parent.recipe[k] for k in kept if k in parent.recipe}
    # An upscale's recipe keeps the size of its source, so variations of it come out at the grid's size.
    size = {"width": parent.recipe["width"], "height": parent.recipe["height"]}
    if action == "r":
        kind = "reroll" if parent.kind in ("imagine", "reroll") else parent.kind
        kept = ("source_job", "source_index", "strength", "strength_name", "image_prompt", "image_weight")
        source = {k: parent.recipe[k] for k in kept if k in parent.recipe}
        return kind, recipe | size | source | {"seeds": list(new_seeds())}
    if action == "u":
        seed = (parent.result or {}).get("seeds", parent.recipe["seeds"])[index - 1]
        return "upscale", recipe | size | {"seeds": [seed], "source_job": parent.id, "source_index": index}
    # V1-V4 use the member's variation mode; Vary (Subtle) and Vary (Strong) say theirs.
    name = {"vs": "subtle", "vx": "strong"}.get(action, preferences.variation)
    return "variation", recipe | size | {
        "seeds": list(new_seeds()),
        "source_job": parent.id,
        "source_index": index,
        "strength": STRENGTHS[name],
        "strength_name": name,
    }


REMIX_TEMPLATE = r"imagine:remix:(?P<action>r|v|vs|vx):(?P<job>[1-9][0-9]{0,17}):(?P<index>[0-4])"
REMIX_INPUT = "prompt"


def remix_modal(action: str, job_id: int, index: int, text: str) -> discord.ui.Modal:
    """The "Remix" modal: the job's prompt with its flags, to edit. Its submission is answered by the Buttons cog
    from the custom_id alone (a restart between opening and submitting loses nothing)."""
    modal = discord.ui.Modal(title="Remix", custom_id=f"imagine:remix:{action}:{job_id}:{index}", timeout=15 * 60)
    modal.add_item(discord.ui.Label(
        text="Prompt",
        description="Edit the prompt and its flags (--ar --no --steps --guidance --seed --model --lora).",
        component=discord.ui.TextInput(custom_id=REMIX_INPUT, style=discord.TextStyle.paragraph,
                                       default=text[:MAX_REMIX_TEXT], max_length=MAX_REMIX_TEXT),
    ))
    return modal


MAX_REMIX_TEXT = 4000  # Discord's most for a text input
