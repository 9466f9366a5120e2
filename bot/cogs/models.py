"""/models: which models and LoRAs this server's bot has, privately."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.backend import Backend
from bot.errors import quoted
from bot.parsing import listing
from bot.replies import NO_PINGS

if TYPE_CHECKING:
    from bot.bot import ImagineBot

MAX_MESSAGE = 2000  # Discord's most for a message


def models_text(backend: Backend, channel_model: str | None = None) -> str:
    """The models in configured order (the default and the loaded ones marked, each with its own defaults), what a
    prompt here gets when it names none, and the LoRAs."""
    models = backend.models
    default = next(iter(models))
    loaded = set(backend.loaded_models())
    lines = ["**Models** (choose with the `model` option or `--model name`):"]
    for name, defaults in models.items():
        marks = [mark for mark, on in (("default", name == default), ("loaded", name in loaded)) if on]
        about = f"{defaults.steps} steps, guidance {defaults.guidance:g}, {defaults.size} px"
        lines.append(f"• `{name}`{' — **' + ', '.join(marks) + '**' if marks else ''} · {quoted(defaults.model, 60)}"
                     f" · {about}")
    if channel_model in models and channel_model != default:
        lines.append(f"A prompt here that names no model gets `{channel_model}` (this channel's default).")
    loras = backend.loras
    if loras:
        lines.append(f"**LoRAs** (`--lora name:0.8` or `<lora:name:0.8>`, up to 3): {listing(loras)}.")
    else:
        lines.append("**LoRAs**: none on this server.")
    text = "\n".join(lines)
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


class Models(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="models", description="List the models and LoRAs you can use here")
    async def models(self, interaction: discord.Interaction[ImagineBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        channel_model = None
        if interaction.guild_id is not None:
            channel_model = (await self.bot.store.limits_for(interaction.guild_id, interaction.channel_id)).model
        await interaction.followup.send(models_text(self.bot.engine, channel_model), ephemeral=True,
                                        allowed_mentions=NO_PINGS)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Models(bot))
