"""The buttons a job's message carries, and the views that lay them out.

They keep working after a restart: each is a DynamicItem whose custom id (``imagine:<action>:<job>:<index>``) carries
everything, and the store is read again on each click. What a button does is the Buttons cog's (bot/cogs/buttons.py),
reached through ``interaction.client``, so that what a job looks like (bot/render.py, this module) imports no cog.
"""

from __future__ import annotations

import re

import discord

PAN_ARROWS = {"left": "⬅️", "right": "➡️", "up": "⬆️", "down": "⬇️"}

# action -> (label, emoji, style)
ACTIONS = {
    "u": ("U{n}", None, discord.ButtonStyle.secondary),
    "v": ("V{n}", None, discord.ButtonStyle.secondary),
    "r": (None, "🔄", discord.ButtonStyle.secondary),
    "vs": ("Vary (Subtle)", "🪄", discord.ButtonStyle.secondary),
    "vx": ("Vary (Strong)", "🪄", discord.ButtonStyle.secondary),
    "z2": ("Zoom Out 2x", "🔍", discord.ButtonStyle.secondary),
    "z15": ("Zoom Out 1.5x", "🔍", discord.ButtonStyle.secondary),
    "zc": ("Custom Zoom", "🔍", discord.ButtonStyle.secondary),
    "pl": (None, PAN_ARROWS["left"], discord.ButtonStyle.secondary),
    "pr": (None, PAN_ARROWS["right"], discord.ButtonStyle.secondary),
    "pu": (None, PAN_ARROWS["up"], discord.ButtonStyle.secondary),
    "pd": (None, PAN_ARROWS["down"], discord.ButtonStyle.secondary),
    "x": ("Cancel", None, discord.ButtonStyle.danger),
}

# A job id has at most 18 digits, so that any id a custom_id can carry fits SQLite's 64-bit INTEGER.
TEMPLATE = r"imagine:(?P<action>u|v|r|vs|vx|z2|z15|zc|pl|pr|pu|pd|x):(?P<job>[1-9][0-9]{0,17}):(?P<index>[0-4])"


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
        await interaction.client.get_cog("Buttons").clicked(interaction, self.action, self.job_id, self.index)


def grid_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for n in range(1, 5):
        view.add_item(JobButton("u", job_id, n, row=0))
    view.add_item(JobButton("r", job_id, 0, row=0))
    for n in range(1, 5):
        view.add_item(JobButton("v", job_id, n, row=1))
    return view


def upscale_view(job_id: int) -> discord.ui.View:
    """Vary (Subtle) and Vary (Strong); under them Zoom Out 2x, 1.5x and Custom Zoom; then the four pans."""
    view = discord.ui.View(timeout=None)
    for row, actions in enumerate((("vs", "vx"), ("z2", "z15", "zc"), ("pl", "pr", "pu", "pd"))):
        for action in actions:
            view.add_item(JobButton(action, job_id, 1, row=row))
    return view


def cancel_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton("x", job_id, 0))
    return view
