"""Grid and upscale buttons that keep working after a restart: their custom ids carry the job and action."""

from __future__ import annotations

import re

import discord
from discord.ext import commands

from bot import admission
from bot.cogs.queue import cancel_job
from bot.errors import UserError
from bot.replies import report_error

# action -> (label, emoji, style)
ACTIONS = {
    "u": ("U{n}", None, discord.ButtonStyle.secondary),
    "v": ("V{n}", None, discord.ButtonStyle.secondary),
    "r": (None, "🔄", discord.ButtonStyle.secondary),
    "vs": ("Vary (Subtle)", "🪄", discord.ButtonStyle.secondary),
    "vx": ("Vary (Strong)", "🪄", discord.ButtonStyle.secondary),
    "x": ("Cancel", None, discord.ButtonStyle.danger),
}


# A job id has at most 18 digits, so that any id a custom_id can carry fits SQLite's 64-bit INTEGER.
TEMPLATE = r"imagine:(?P<action>u|v|r|vs|vx|x):(?P<job>[1-9][0-9]{0,17}):(?P<index>[0-4])"


class JobButton(discord.ui.DynamicItem[discord.ui.Button], template=TEMPLATE):
    """``imagine:<action>:<job id>:<image index>``; everything else is read from the store on each click."""

    def __init__(self, action: str, job_id: int, index: int, *, row: int | None = None) -> None:
        label, emoji, style = ACTIONS[action]
        super().__init__(
            discord.ui.Button(
                label=label.format(n=index) if label else None,
                emoji=emoji,
                style=style,
                custom_id=f"imagine:{action}:{job_id}:{index}",
                row=row,
            )
        )
        self.action = action
        self.job_id = job_id
        self.index = index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /):
        return cls(match["action"], int(match["job"]), int(match["index"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            if self.action == "x":
                await cancel_job(interaction, self.job_id)
            else:
                await admission.click(interaction, self.action, self.job_id, self.index)
        except Exception as error:
            await report_error(interaction, error)


class Buttons(commands.Cog):
    """Answers the clicks discord.py itself drops: a custom_id the clicked message doesn't carry.

    Official clients only send the custom_id of a button they show, but Discord doesn't check it, so a modified
    client can send any. discord.py calls a DynamicItem only for a custom_id that is on the message and ignores the
    rest, which leaves the member with "This interaction failed"; here they get a private refusal instead.
    """

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type is discord.InteractionType.modal_submit:
            await self.remix_submitted(interaction)
            return
        if interaction.type is not discord.InteractionType.component or interaction.message is None:
            return
        custom_id = (interaction.data or {}).get("custom_id", "")
        view = discord.ui.View.from_message(interaction.message, timeout=None)
        if any(getattr(item, "custom_id", None) == custom_id for item in view.walk_children()):
            return  # a button the message shows: its DynamicItem (or view) answers
        try:
            match = JobButton.__discord_ui_compiled_template__.fullmatch(custom_id)
            if match is not None:
                await admission.clicked_job(interaction, int(match["job"]))  # the same refusals as a real click
            raise UserError("That button isn't on this message any more, so I can't use it.")
        except Exception as error:
            await report_error(interaction, error)

    async def remix_submitted(self, interaction: discord.Interaction) -> None:
        """A "Remix" modal (bot/admission.py remix_modal) was submitted: answered from its custom_id alone, so that
        a modal opened before a restart still works after it."""
        data = interaction.data or {}
        match = re.fullmatch(admission.REMIX_TEMPLATE, data.get("custom_id", ""))
        if match is None:
            return
        text = next((value for custom_id, value in _submitted(data.get("components", []))
                     if custom_id == admission.REMIX_INPUT), "")
        try:
            await admission.remix(interaction, match["action"], int(match["job"]), int(match["index"]), text)
        except Exception as error:
            await report_error(interaction, error)


def _submitted(components: list[dict]) -> list[tuple[str, str]]:
    """(custom_id, value) of each text input of a modal submission, in labels or (the older form) action rows."""
    found = []
    for component in components:
        for inner in [component.get("component") or {}, *component.get("components", [])]:
            if "custom_id" in inner and "value" in inner:
                found.append((inner["custom_id"], inner["value"]))
    return found


async def setup(bot: commands.Bot) -> None:
    bot.add_dynamic_items(JobButton)
    await bot.add_cog(Buttons())
