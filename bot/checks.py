"""Who may do what: one named decorator per rule, hiding the command and checking again when it runs."""

from __future__ import annotations

import discord
from discord import app_commands


class NotModerator(app_commands.CheckFailure):
    def __init__(self) -> None:
        super().__init__("Only moderators (Manage Channels or Manage Server) can change the limits.")


def is_moderator(interaction: discord.Interaction) -> bool:
    permissions = interaction.permissions
    return permissions.manage_channels or permissions.manage_guild


def moderator_only():
    """Hide a command or GroupCog from members without Manage Channels; pair with `require_moderator` at run time.

    Discord only hides what ``default_permissions`` names, and server admins may change who sees it,
    so the run-time check is what actually protects the settings.
    """

    def decorator(obj):
        obj = app_commands.default_permissions(manage_channels=True)(obj)
        return app_commands.guild_only()(obj)

    return decorator


def require_moderator(interaction: discord.Interaction) -> bool:
    if not is_moderator(interaction):
        raise NotModerator()
    return True
