"""/queue and /cancel: what is waiting, and taking it back."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.checks import is_moderator
from bot.errors import UserError
from bot.replies import NO_PINGS
from bot.store import Job

if TYPE_CHECKING:
    from bot.bot import ImagineBot


def describe(job: Job, position: int) -> str:
    prompt = job.recipe["prompt"]
    if len(prompt) > 60:
        prompt = prompt[:59] + "…"
    where = "running now" if job.status == "running" else f"#{position} in the queue"
    return (f"**#{job.id}** {render.title(job)} · {discord.utils.escape_markdown(prompt)} · {where} · "
            f"<t:{int(job.created_at)}:R>")


async def cancel_job(interaction: discord.Interaction[ImagineBot], job_id: int | None) -> None:
    """Cancel one of the member's jobs (moderators may cancel anyone's); the answer is private."""
    bot = interaction.client
    await interaction.response.defer(ephemeral=True, thinking=True)
    if job_id is None:
        mine = await bot.store.user_jobs(interaction.user.id, interaction.guild_id)
        if not mine:
            raise UserError("You have no queued or running jobs to cancel.")
        job = max((job for job, _ in mine), key=lambda j: j.created_at)
    else:
        job = await bot.store.get_job(job_id)
        if job is None or job.guild_id != interaction.guild_id:
            raise UserError(f"There is no job #{job_id} in this server.")
    if job.user_id != interaction.user.id and not is_moderator(interaction):
        raise UserError("You can only cancel your own jobs.")
    if await bot.runner.cancel(job) is None:
        raise UserError(f"Job #{job.id} is already {job.status}, so there is nothing to cancel.")
    await interaction.followup.send(f"Cancelled job #{job.id}.", ephemeral=True, allowed_mentions=NO_PINGS)


class Queue(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="queue", description="Show your queued and running jobs")
    @app_commands.guild_only()
    async def queue(self, interaction: discord.Interaction[ImagineBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        mine = await self.bot.store.user_jobs(interaction.user.id, interaction.guild_id)
        if not mine:
            text = "You have no queued or running jobs. Start one with /imagine."
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)
            return
        lines = [describe(job, position) for job, position in mine]
        await interaction.followup.send("\n".join(["Your jobs:", *lines]), ephemeral=True, allowed_mentions=NO_PINGS)

    @app_commands.command(name="cancel", description="Cancel one of your jobs (your latest if you name none)")
    @app_commands.describe(job="The job number, as shown by /queue")
    @app_commands.guild_only()
    async def cancel(self, interaction: discord.Interaction[ImagineBot], job: int | None = None) -> None:
        await cancel_job(interaction, job)

    @cancel.autocomplete("job")
    async def cancel_autocomplete(self, interaction: discord.Interaction[ImagineBot], current: str) -> list[app_commands.Choice[int]]:
        mine = await self.bot.store.user_jobs(interaction.user.id, interaction.guild_id)
        return [
            app_commands.Choice(name=f"#{job.id} {job.recipe['prompt'][:80]}", value=job.id)
            for job, _ in mine
            if current in str(job.id) or current.lower() in job.recipe["prompt"].lower()
        ][:25]


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Queue(bot))
