"""Grid and upscale buttons that keep working after a restart: their custom ids carry the job and action."""

from __future__ import annotations

import re

import discord
from discord.ext import commands

from bot import admission
from bot.cogs.queue import cancel_job
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


class JobButton(discord.ui.DynamicItem[discord.ui.Button], template=r"imagine:(?P<action>u|v|r|vs|vx|x):(?P<job>[0-9]+):(?P<index>[0-4])"):
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


async def setup(bot: commands.Bot) -> None:
    bot.add_dynamic_items(JobButton)
