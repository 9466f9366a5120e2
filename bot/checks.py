"""Who may do what: one named decorator per rule, hiding the command and checking again when it runs."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.store import Job


class NotModerator(app_commands.CheckFailure):
    def __init__(self) -> None:
        super().__init__("Only moderators (Manage Channels or Manage Server) can change the limits.")


def is_moderator(interaction: discord.Interaction) -> bool:
    return moderates(interaction.permissions)


def moderates(permissions: discord.Permissions) -> bool:
    """Moderator = Manage Channels or Manage Server (in the channel at hand)."""
    return permissions.manage_channels or permissions.manage_guild


def may_manage_job(job: Job, user_id: int, permissions: discord.Permissions) -> bool:
    """Whether this member may show or delete the job: its requester, or a moderator."""
    return job.user_id == user_id or moderates(permissions)


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
