"""Deleting a result: a ❌ reaction or the "Delete image" message command, by its requester or a moderator."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.checks import may_manage_job
from bot.errors import UserError
from bot.replies import NO_PINGS
from bot.store import Job

if TYPE_CHECKING:
    from bot.bot import ImagineBot

log = logging.getLogger(__name__)

DELETE_EMOJI = "❌"


class Delete(commands.Cog):
    """Deletes the message and the job's stored images; the job's other messages' buttons then say so."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        # Context menus can't be defined as Cog methods; this is discord.py's way to keep one with its Cog.
        self.menu = app_commands.guild_only(app_commands.ContextMenu(name="Delete image", callback=self.delete_image))

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    async def delete(self, job: Job, channel_id: int, message_id: int, by: int) -> None:
        """The images first (what matters), then the message showing them."""
        await self.bot.store.delete_images(job.id)
        message = self.bot.get_partial_messageable(channel_id, guild_id=job.guild_id).get_partial_message(message_id)
        try:
            await message.delete()
        except discord.NotFound:
            pass
        except discord.HTTPException as error:
            log.warning("Deleted the images of job %d but not its message %d: %s", job.id, message_id, error)
        log.info("Deleted the images of job %d at the request of user %d", job.id, by)

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        """❌ on a result by its requester or a moderator deletes it; anyone else's ❌ changes nothing."""
        bot = self.bot
        if str(payload.emoji) != DELETE_EMOJI or payload.guild_id is None or bot.user is None:
            return
        if payload.user_id == bot.user.id or payload.message_author_id not in (None, bot.user.id):
            return  # only ❌ by members on the bot's own messages can mean something
        job = await bot.store.job_for_message(payload.message_id)
        if job is None or job.guild_id != payload.guild_id or job.status != "done":
            return
        guild = bot.get_guild(payload.guild_id)
        channel = guild.get_channel_or_thread(payload.channel_id) if guild else None
        if payload.member is None or channel is None:
            return
        if may_manage_job(job, payload.user_id, channel.permissions_for(payload.member)):
            await self.delete(job, payload.channel_id, payload.message_id, payload.user_id)

    async def delete_image(self, interaction: discord.Interaction[ImagineBot], message: discord.Message) -> None:
        """Apps → Delete image on a result: the same rights as ❌, answered privately."""
        bot = self.bot
        await interaction.response.defer(ephemeral=True, thinking=True)
        job = await bot.store.job_for_message(message.id) if message.author.id == bot.user.id else None
        if job is None or job.guild_id != interaction.guild_id:
            raise UserError("That message isn't one of my pictures, so there is nothing to delete.")
        if not may_manage_job(job, interaction.user.id, interaction.permissions):
            raise UserError("Only the member who made this picture or a moderator can delete it.")
        if job.status != "done":
            raise UserError(f"Job #{job.id} isn't finished; /cancel stops it instead.")
        await self.delete(job, message.channel.id, message.id, interaction.user.id)
        await interaction.followup.send(f"Deleted the picture of job #{job.id} and its stored images.",
                                        ephemeral=True, allowed_mentions=NO_PINGS)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Delete(bot))
