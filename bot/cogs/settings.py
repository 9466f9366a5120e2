"""/settings and /prefer suffix: each member's own preferences in a server, kept in SQLite.

The /settings panel is an ephemeral message whose buttons and select are DynamicItems: their custom ids name the
member (``settings:<user id>:<what>``), so the panel keeps working after a restart, and a click by anyone else is
refused. Each change is saved, then the panel is redrawn in place (an update of the clicked message).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.backend import offered
from bot.errors import UserError
from bot.parsing import ASPECT_CHOICES, MAX_STEPS, MAX_SUFFIX, BadInput, find_banned, parse_imagine, parse_suffix
from bot.replies import NO_PINGS, report_error, tell
from bot.store import Preferences

if TYPE_CHECKING:
    from bot.bot import ImagineBot

MODEL_DEFAULT = "default"  # the aspect select's value for "no default of my own"
PANEL_KEYS = ("remix", "variation", "aspect")  # what Reset puts back; the suffix has its own command


def panel_text(preferences: Preferences, guild: discord.Guild | None) -> str:
    where = f" in **{discord.utils.escape_markdown(guild.name)}**" if guild else ""
    remix = "on: 🔄 and the variation buttons first let you edit the prompt" if preferences.remix else "off"
    suffix = f"`{preferences.suffix.replace('`', chr(39))}`" if preferences.suffix else "none"
    return "\n".join([
        f"**Your settings{where}** (only you see them)",
        f"• Remix mode: **{remix}**",
        f"• Variation mode: **{preferences.variation.capitalize()}** (what V1–V4 use)",
        f"• Default aspect ratio: **{preferences.aspect or 'the model’s'}** (when a prompt names none)",
        f"• Suffix: {suffix} (added to every prompt; change it with `/prefer suffix`)",
    ])


def panel_view(user_id: int, preferences: Preferences) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(SettingsButton(user_id, "remix", preferences))
    view.add_item(SettingsButton(user_id, "strong", preferences))
    view.add_item(SettingsButton(user_id, "subtle", preferences))
    view.add_item(AspectSelect(user_id, preferences.aspect))
    view.add_item(SettingsButton(user_id, "reset", preferences))
    return view


def check_owner(interaction: discord.Interaction, owner_id: int) -> None:
    if interaction.user.id != owner_id:  # an ephemeral panel is seen by its member only, but custom ids are sent
        raise UserError("These settings are someone else's; `/settings` shows yours.")
    if interaction.guild_id is None:
        raise UserError("Settings are kept per server; use `/settings` in one.")


async def change(interaction: discord.Interaction[ImagineBot], owner_id: int, **changes: object) -> None:
    """Save a change from the panel of `owner_id` (no changes: Reset) and redraw the panel in place."""
    check_owner(interaction, owner_id)
    store = interaction.client.store
    # One short write, then the update is the first response (well within Discord's 3 s).
    if changes:
        preferences = await store.set_preferences(interaction.guild_id, owner_id, **changes)
    else:
        preferences = await store.reset_preferences(interaction.guild_id, owner_id, PANEL_KEYS)
    await interaction.response.edit_message(content=panel_text(preferences, interaction.guild),
                                            view=panel_view(owner_id, preferences), allowed_mentions=NO_PINGS)


BUTTONS = {"remix": "Remix mode", "strong": "Strong variations", "subtle": "Subtle variations", "reset": "Reset"}


BUTTON_TEMPLATE = r"settings:(?P<user>[0-9]{1,20}):(?P<what>remix|strong|subtle|reset)"


class SettingsButton(discord.ui.DynamicItem[discord.ui.Button], template=BUTTON_TEMPLATE):
    """``settings:<user id>:<what>``: Remix mode toggles, Strong/Subtle set the variation mode, Reset resets."""

    def __init__(self, user_id: int, what: str, preferences: Preferences | None = None) -> None:
        preferences = preferences or Preferences()
        on = {"remix": preferences.remix, "strong": preferences.variation == "strong",
              "subtle": preferences.variation == "subtle", "reset": False}[what]
        style = discord.ButtonStyle.danger if what == "reset" else (
            discord.ButtonStyle.success if on else discord.ButtonStyle.secondary)
        label = BUTTONS[what] + (f": {'on' if on else 'off'}" if what == "remix" else "")
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=f"settings:{user_id}:{what}",
                                           row=2 if what == "reset" else 0))
        self.user_id = user_id
        self.what = what

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /):
        return cls(int(match["user"]), match["what"])

    async def callback(self, interaction: discord.Interaction[ImagineBot]) -> None:
        try:
            if self.what == "remix":
                check_owner(interaction, self.user_id)
                current = await interaction.client.store.preferences(interaction.guild_id, self.user_id)
                await change(interaction, self.user_id, remix=not current.remix)
            elif self.what == "reset":
                await change(interaction, self.user_id)
            else:
                await change(interaction, self.user_id, variation=self.what)
        except Exception as error:
            await report_error(interaction, error)


class AspectSelect(discord.ui.DynamicItem[discord.ui.Select], template=r"settings:(?P<user>[0-9]{1,20}):ar"):
    """``settings:<user id>:ar``: the member's default aspect ratio, or the model's."""

    def __init__(self, user_id: int, aspect: str | None = None) -> None:
        options = [discord.SelectOption(label="Model default", value=MODEL_DEFAULT, default=aspect is None)]
        options += [discord.SelectOption(label=a, value=a, default=a == aspect) for a in ASPECT_CHOICES]
        super().__init__(discord.ui.Select(custom_id=f"settings:{user_id}:ar", placeholder="Default aspect ratio",
                                           options=options, row=1))
        self.user_id = user_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Select, match: re.Match[str], /):
        return cls(int(match["user"]))

    async def callback(self, interaction: discord.Interaction[ImagineBot]) -> None:
        try:
            value = self.item.values[0] if self.item.values else MODEL_DEFAULT
            if value != MODEL_DEFAULT and value not in ASPECT_CHOICES:  # a forged value
                raise UserError("That isn't an aspect ratio the panel offers.")
            await change(interaction, self.user_id, aspect=None if value == MODEL_DEFAULT else value)
        except Exception as error:
            await report_error(interaction, error)


class Settings(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="settings", description="Your preferences here: Remix mode, variation mode, aspect")
    @app_commands.guild_only()
    async def settings(self, interaction: discord.Interaction[ImagineBot]) -> None:
        preferences = await self.bot.store.preferences(interaction.guild_id, interaction.user.id)  # one read
        await interaction.response.send_message(panel_text(preferences, interaction.guild), ephemeral=True,
                                                view=panel_view(interaction.user.id, preferences),
                                                allowed_mentions=NO_PINGS)

    prefer = app_commands.Group(name="prefer", description="Your preferences for prompts here", guild_only=True)

    @prefer.command(name="suffix", description="Text added to every prompt you send here (flags too); empty clears")
    @app_commands.describe(value="e.g. --ar 16:9 --no text, or words to add; leave it out to clear your suffix")
    async def suffix(self, interaction: discord.Interaction[ImagineBot],
                     value: app_commands.Range[str, 1, MAX_SUFFIX] | None = None) -> None:
        store = self.bot.store
        text = " ".join((value or "").split())
        try:
            # The suffix goes through the checks of /imagine text: its flags and their values, banned words.
            words, _flags = parse_suffix(text)
            parse_imagine("a picture", offered(self.bot.engine), suffix=text, max_steps=MAX_STEPS)
        except BadInput as error:
            await tell(interaction, str(error))
            return
        word = find_banned(words, await store.banned_words(interaction.guild_id))
        if word is not None:
            await tell(interaction, f"Your suffix contains “{word}”, which this server doesn't allow.")
            return
        await store.set_preferences(interaction.guild_id, interaction.user.id, suffix=text)
        if text:
            said = f"Your suffix is now `{text.replace('`', chr(39))}`: it's added to every prompt you send here."
        else:
            said = "Your suffix is cleared."
        await tell(interaction, said)


async def setup(bot: ImagineBot) -> None:
    bot.add_dynamic_items(SettingsButton, AspectSelect)
    await bot.add_cog(Settings(bot))
