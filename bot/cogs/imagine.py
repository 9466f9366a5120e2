"""/imagine: four images from a prompt."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.admission import submit
from bot.parsing import ASPECT_CHOICES, MAX_GUIDANCE, MAX_SEED, MAX_STEPS, BadInput, parse_imagine
from bot.replies import tell

if TYPE_CHECKING:
    from bot.bot import ImagineBot


class Imagine(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(description="Make four images from a prompt")
    @app_commands.describe(
        prompt="What to draw. Flags work too: --ar 16:9 --seed 42 --no text --steps 30 --guidance 6",
        negative="What to keep out of the picture (same as --no)",
        aspect="Aspect ratio (same as --ar); any W:H up to 3:1 works as a flag",
        seed="Seed of the first image; the others use the next three",
        steps="Denoising steps: more is slower and often finer",
        guidance="How closely to follow the prompt (0 for turbo models)",
    )
    @app_commands.choices(aspect=[app_commands.Choice(name=a, value=a) for a in ASPECT_CHOICES])
    @app_commands.guild_only()
    async def imagine(
        self,
        interaction: discord.Interaction[ImagineBot],
        prompt: app_commands.Range[str, 1, 1500],
        negative: app_commands.Range[str, 1, 1000] | None = None,
        aspect: str | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        steps: app_commands.Range[int, 1, MAX_STEPS] | None = None,
        guidance: app_commands.Range[float, 0.0, MAX_GUIDANCE] | None = None,
    ) -> None:
        # One read before the answer: a refusal of what the member typed (their suffix included) stays private.
        preferences = await self.bot.store.preferences(interaction.guild_id, interaction.user.id)
        try:
            recipe = parse_imagine(
                prompt,
                self.bot.engine.defaults,
                negative=negative,
                aspect=aspect,
                seed=seed,
                steps=steps,
                guidance=guidance,
                max_steps=MAX_STEPS,
                suffix=preferences.suffix,
                default_aspect=preferences.aspect,
            )
        except BadInput as error:
            await tell(interaction, str(error))
            return
        await submit(interaction, "imagine", recipe.to_dict())


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Imagine(bot))
