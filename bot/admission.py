"""Admit a job: acknowledge the interaction, check the channel's limits, and queue it atomically."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord

from bot.errors import UserError
from bot.parsing import find_banned, new_seeds
from bot.replies import tell, token_expiry
from bot.store import Job, Limits

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


async def submit(interaction: discord.Interaction[ImagineBot], kind: str, recipe: dict, *, parent: Job | None = None) -> Job | None:
    """Queue a job for the member behind this interaction, or tell them privately why not."""
    bot = interaction.client
    if not interaction.response.is_done():
        await interaction.response.defer(thinking=True)

    channel = interaction.channel
    try:
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


async def click(interaction: discord.Interaction[ImagineBot], action: str, job_id: int, index: int) -> None:
    """A grid or upscale button: make the follow-up job from the clicked job's stored recipe and images."""
    bot = interaction.client
    parent = await clicked_job(interaction, job_id)
    if action in ("u", "v", "vs", "vx"):
        if parent.images_pruned:
            await bot.store.image(parent.id, index)  # raises ImagesGone, which says how long images are kept
        if not 1 <= index <= parent.image_count:
            raise UserError(f"Job #{parent.id} has no image #{index}.")
    await interaction.response.defer(thinking=True)  # this click starts a job: its message is public

    recipe = {k: parent.recipe[k] for k in ("prompt", "negative_prompt", "steps", "guidance", "aspect") if k in parent.recipe}
    # An upscale's recipe keeps the size of its source, so variations of it come out at the grid's size.
    size = {"width": parent.recipe["width"], "height": parent.recipe["height"]}
    if action == "r":
        kind = "reroll" if parent.kind in ("imagine", "reroll") else parent.kind
        source = {k: parent.recipe[k] for k in ("source_job", "source_index", "strength", "strength_name",
                                                    "image_prompt", "image_weight") if k in parent.recipe}
        recipe |= size | source | {"seeds": list(new_seeds())}
    elif action == "u":
        kind = "upscale"
        seed = (parent.result or {}).get("seeds", parent.recipe["seeds"])[index - 1]
        recipe |= size | {"seeds": [seed], "source_job": parent.id, "source_index": index}
    else:
        kind = "variation"
        name = "subtle" if action == "vs" else "strong"
        recipe |= size | {
            "seeds": list(new_seeds()),
            "source_job": parent.id,
            "source_index": index,
            "strength": STRENGTHS[name],
            "strength_name": name,
        }
    await submit(interaction, kind, recipe, parent=parent)
