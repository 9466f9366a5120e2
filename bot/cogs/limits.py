"""/limits: moderators set what members may do, per channel or as the server's default."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.checks import moderator_only, require_moderator
from bot.errors import quoted
from bot.options import offer_models
from bot.parsing import listing
from bot.replies import NO_PINGS
from bot.store import LIMIT_KEYS

if TYPE_CHECKING:
    from bot.bot import ImagineBot

DESCRIPTIONS = {
    "enabled": "Bot enabled",
    "jobs_per_hour": "Jobs per member per hour",
    "max_queued": "Queued jobs per member",
    "max_steps": "Most steps",
    "max_side": "Largest image side (px)",
    "nsfw_allowed": "NSFW allowed (age-restricted channels only)",
    "model": "Default model",
}
SETTING_CHOICES = [app_commands.Choice(name=DESCRIPTIONS[key], value=key) for key in LIMIT_KEYS]


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


@moderator_only()
class LimitsCog(commands.GroupCog, name="Limits", group_name="limits", group_description="Moderators: what members may do here"):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        super().__init__()
        offer_models(self.set_, "model", list(bot.engine.models))  # only when there is a choice

    def _model_shown(self, value: str | None, source: str) -> str:
        """The model a channel gets, for /limits show; a name no longer configured is shown with what replaces it."""
        default = next(iter(self.bot.engine.models))
        if source == "default":
            return f"**{default}** (the first configured model)"
        if value not in self.bot.engine.models:
            return f"**{default}** (`{quoted(value, 32)}` is {_SOURCES[source]} but no longer configured)"
        return f"**{value}** ({_SOURCES[source]})"

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return require_moderator(interaction)

    @app_commands.command(name="show", description="Show the limits in force in a channel")
    @app_commands.describe(channel="Which channel (this one if you name none)")
    async def show(self, interaction: discord.Interaction[ImagineBot], channel: discord.TextChannel | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        channel_id = channel.id if channel else interaction.channel_id
        overrides = await self.bot.store.limit_overrides(interaction.guild_id, channel_id)
        lines = [f"Limits in <#{channel_id}>:"]
        for key in LIMIT_KEYS:
            value, source = overrides[key]
            if key == "model":
                if len(self.bot.engine.models) > 1:  # with one model there is nothing to choose
                    lines.append(f"• {DESCRIPTIONS[key]}: {self._model_shown(value, source)}")
                continue
            lines.append(f"• {DESCRIPTIONS[key]}: **{_value(value)}** ({_SOURCES[source]})")
        banned = await self.bot.store.banned_words(interaction.guild_id)
        lines.append(f"• Banned words: {', '.join(f'`{w}`' for w in banned) if banned else 'none'}")
        await interaction.followup.send("\n".join(lines), ephemeral=True, allowed_mentions=NO_PINGS)

    @app_commands.command(name="set", description="Change limits for a channel, or the server's default")
    @app_commands.describe(
        enabled="Whether members can use the bot here",
        jobs_per_hour="Jobs each member may start per rolling hour (to stop all jobs, use enabled)",
        max_queued="Jobs each member may have waiting at once",
        max_steps="Most denoising steps a job may use",
        max_side="Largest image side in pixels",
        nsfw_allowed="Post images the safety checker flags (as spoilers), in age-restricted channels only",
        model="The model a prompt gets when it names none (--model or the model option still choose)",
        channel="Which channel (this one if you name none)",
        server_default="Set the default for every channel without its own value instead",
    )
    async def set_(
        self,
        interaction: discord.Interaction[ImagineBot],
        enabled: bool | None = None,
        jobs_per_hour: app_commands.Range[int, 1, 1000] | None = None,  # the store's LIMIT_RANGES
        max_queued: app_commands.Range[int, 1, 100] | None = None,
        max_steps: app_commands.Range[int, 1, 150] | None = None,
        max_side: app_commands.Range[int, 64, 4096] | None = None,
        nsfw_allowed: bool | None = None,
        model: str | None = None,
        channel: discord.TextChannel | None = None,
        server_default: bool = False,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        models = self.bot.engine.models
        if model is not None:
            model = model.strip().lower()
            if model not in models:  # a stale choice, or sent by a modified client
                text = f"There is no model called `{quoted(model, 32)}` here. Models here: {listing(models)}."
                await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)
                return
        given = {
            "enabled": enabled,
            "jobs_per_hour": jobs_per_hour,
            "max_queued": max_queued,
            "max_steps": max_steps,
            "max_side": max_side,
            "nsfw_allowed": nsfw_allowed,
            "model": model,
        }
        changes = {key: value for key, value in given.items() if value is not None}
        if not changes:
            text = "Name at least one setting to change, e.g. `jobs_per_hour:5`."
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)
            return
        channel_id = None if server_default else (channel.id if channel else interaction.channel_id)
        for key, value in changes.items():
            await self.bot.store.set_limit(interaction.guild_id, channel_id, key, value)
        where = "the server default" if channel_id is None else f"<#{channel_id}>"
        summary = ", ".join(f"{DESCRIPTIONS[k].lower()}: **{_value(v)}**" for k, v in changes.items())
        await interaction.followup.send(f"Updated {where}: {summary}.", ephemeral=True, allowed_mentions=NO_PINGS)

    @app_commands.command(name="reset", description="Go back to the server default (or built-in default)")
    @app_commands.describe(
        setting="Which limit (all if you name none)",
        channel="Which channel (this one if you name none)",
        server_default="Reset the server default instead of a channel",
    )
    @app_commands.choices(setting=SETTING_CHOICES)
    async def reset(
        self,
        interaction: discord.Interaction[ImagineBot],
        setting: str | None = None,
        channel: discord.TextChannel | None = None,
        server_default: bool = False,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        channel_id = None if server_default else (channel.id if channel else interaction.channel_id)
        count = await self.bot.store.reset_limits(interaction.guild_id, channel_id, setting)
        where = "the server default" if channel_id is None else f"<#{channel_id}>"
        what = DESCRIPTIONS[setting].lower() if setting else "all limits"
        await interaction.followup.send(
            f"Reset {what} for {where} ({count} value(s) removed).", ephemeral=True, allowed_mentions=NO_PINGS
        )

    @app_commands.command(name="ban", description="Refuse prompts that contain a word or phrase (whole words, any case)")
    async def ban(self, interaction: discord.Interaction[ImagineBot], phrase: app_commands.Range[str, 1, 100]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        added = await self.bot.store.add_banned_word(interaction.guild_id, phrase)
        text = f"Prompts containing “{phrase.strip()}” are now refused." if added else f"“{phrase.strip()}” was already banned."
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)

    @app_commands.command(name="unban", description="Allow a banned word or phrase again")
    async def unban(self, interaction: discord.Interaction[ImagineBot], phrase: app_commands.Range[str, 1, 100]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        removed = await self.bot.store.remove_banned_word(interaction.guild_id, phrase)
        text = f"“{phrase.strip()}” is allowed again." if removed else f"“{phrase.strip()}” wasn't banned."
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)


_SOURCES = {"channel": "set for this channel", "server": "server default", "default": "built-in default"}


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(LimitsCog(bot))
