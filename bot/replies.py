"""How the bot answers a member: the one place that knows the interaction's state."""

from __future__ import annotations

import logging

import discord
from discord import app_commands

from bot.errors import UserError

log = logging.getLogger(__name__)

INTERACTION_LIFETIME = 15 * 60  # Discord accepts edits through an interaction token for 15 minutes
UNEXPECTED = "Something went wrong on my side. It has been logged; please try again."

# Text members type (prompts, banned words...) is shown, never obeyed: a message pings exactly who it names here.
NO_PINGS = discord.AllowedMentions.none()


def ping(user_id: int) -> discord.AllowedMentions:
    """Mentions that notify this one member and nobody else, whatever else the text mentions."""
    return discord.AllowedMentions(everyone=False, roles=False, replied_user=False, users=[discord.Object(user_id)])


async def tell(interaction: discord.Interaction, text: str) -> None:
    """Say something only the member sees, whatever state the interaction is in."""
    if not interaction.response.is_done():
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_PINGS)
        return
    if interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
        # The first follow-up of a deferred response takes over the "thinking" message and its visibility;
        # remove a public one so that the refusal stays private.
        try:
            await interaction.delete_original_response()
        except discord.HTTPException:
            pass
    await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)


def token_expiry(interaction: discord.Interaction) -> float:
    return interaction.created_at.timestamp() + INTERACTION_LIFETIME


async def report_error(interaction: discord.Interaction, error: Exception) -> None:
    """Turn any error from a command or button into an ephemeral reply; log the ones that are our fault."""
    if isinstance(error, (app_commands.CommandInvokeError, app_commands.TransformerError)) and error.__cause__:
        error = error.__cause__
    if isinstance(error, (UserError, app_commands.CheckFailure)):
        text = str(error)
    else:
        log.error("Error in %s", interaction.command.qualified_name if interaction.command else "a button", exc_info=error)
        text = UNEXPECTED
    try:
        await tell(interaction, text)
    except discord.HTTPException:
        log.warning("Could not tell %s about an error: %s", interaction.user, text)
