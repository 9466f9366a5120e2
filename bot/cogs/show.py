"""/show: post a finished job's picture again, with working buttons, in the current channel."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.checks import may_manage_job
from bot.errors import UserError
from bot.replies import NO_PINGS
from bot.store import Job

if TYPE_CHECKING:
    from bot.bot import ImagineBot


async def showable_job(interaction: discord.Interaction[ImagineBot], job_id: int) -> Job:
    """The job /show may post here, in one read; otherwise a refusal (a UserError), before anything is public."""
    store = interaction.client.store
    job = await store.get_job(job_id)
    if job is None or job.guild_id != interaction.guild_id:  # no image of one server may reach another
        raise UserError(f"There is no job #{job_id} in this server.")
    if not may_manage_job(job, interaction.user.id, interaction.permissions):
        raise UserError(f"Job #{job.id} is someone else's; you can show your own jobs (moderators: anyone's).")
    if job.status in ("queued", "running"):
        raise UserError(f"Job #{job.id} isn't finished yet, so there is nothing to show.")
    if job.status != "done":
        raise UserError(f"Job #{job.id} was {job.status}, so it has no picture to show.")
    if job.images_pruned:
        await store.image(job.id, 1)  # raises ImagesDeleted, or ImagesGone saying how long images are kept
    return job


class Show(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="show", description="Post one of your finished jobs here again, with its buttons")
    @app_commands.describe(job="The job number, as its picture says (job #N)")
    @app_commands.guild_only()
    async def show(self, interaction: discord.Interaction[ImagineBot], job: app_commands.Range[int, 1]) -> None:
        found = await showable_job(interaction, job)
        await interaction.response.defer(thinking=True)  # the picture is public

        store = self.bot.store
        pictures = [await store.image(found.id, n) for n in range(1, found.image_count + 1)]
        grid = await store.grid(found.id) if found.kind in render.GRID_KINDS else None
        parent = await store.get_job(found.parent_id) if found.parent_id else None
        # Whether flagged images may be shown unblurred is this channel's decision, not the original one's.
        limits = await store.limits_for(interaction.guild_id, interaction.channel_id)
        nsfw_ok = bool(limits.nsfw_allowed and getattr(interaction.channel, "nsfw", False))
        shown = render.finished(found, pictures, grid, parent=parent, nsfw_ok=nsfw_ok)

        message = await interaction.followup.send(
            shown.content, embed=shown.embed, files=shown.files, view=shown.view, allowed_mentions=NO_PINGS,
            wait=True,
        )
        await store.add_message(found.id, message.id, interaction.channel_id)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Show(bot))
