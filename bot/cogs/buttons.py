"""What the buttons of a job's message do (the buttons themselves, and their custom ids, are bot/views.py)."""

from __future__ import annotations

import re

import discord
from discord.ext import commands

from bot import admission
from bot.cogs.queue import cancel_job
from bot.errors import UserError
from bot.replies import report_error
from bot.views import JobButton


class Buttons(commands.Cog):
    """What the job buttons (bot/views.py JobButton) and the modals they open do.

    It also answers the clicks discord.py itself drops: a custom_id the clicked message doesn't carry. Official
    clients only send the custom_id of a button they show, but Discord doesn't check it, so a modified client can
    send any. discord.py calls a DynamicItem only for a custom_id that is on the message and ignores the rest, which
    leaves the member with "This interaction failed"; here they get a private refusal instead.
    """

    async def clicked(self, interaction: discord.Interaction, action: str, job_id: int, index: int) -> None:
        """A JobButton was clicked (its callback comes here through the client)."""
        try:
            if action == "x":
                await cancel_job(interaction, job_id)
            else:
                await admission.click(interaction, action, job_id, index)
        except Exception as error:
            await report_error(interaction, error)

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type is discord.InteractionType.modal_submit:
            await self.modal_submitted(interaction)
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

    async def modal_submitted(self, interaction: discord.Interaction) -> None:
        """A "Remix" or "Custom Zoom" modal (bot/admission.py remix_modal, zoom_modal) was submitted: answered from
        its custom_id alone, so that a modal opened before a restart still works after it."""
        data = interaction.data or {}
        custom_id = data.get("custom_id", "")
        remix = re.fullmatch(admission.REMIX_TEMPLATE, custom_id)
        zoom = re.fullmatch(admission.ZOOM_TEMPLATE, custom_id)
        if remix is None and zoom is None:
            return
        text = next((value for custom_id, value in _submitted(data.get("components", []))
                     if custom_id == admission.REMIX_INPUT), "")
        try:
            if remix is not None:
                await admission.remix(interaction, remix["action"], int(remix["job"]), int(remix["index"]), text)
            else:
                await admission.custom_zoom(interaction, int(zoom["job"]), text)
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
