"""/imagine: four images from a prompt."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import image_prompt
from bot.admission import submit
from bot.backend import offered
from bot.parsing import ASPECT_CHOICES, MAX_GUIDANCE, MAX_SEED, MAX_STEPS, BadInput, parse_imagine
from bot.replies import tell

if TYPE_CHECKING:
    from bot.bot import ImagineBot

log = logging.getLogger(__name__)


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
        image="Start from this picture (PNG, JPEG or WebP, up to 10 MB); --iw 0-3 says how closely to keep it",
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
        image: discord.Attachment | None = None,
    ) -> None:
        # One read before the answer: a refusal of what the member typed (their suffix included) stays private.
        defaults = offered(self.bot.engine)
        preferences = await self.bot.store.preferences(interaction.guild_id, interaction.user.id)
        picture = None
        if image is not None:
            picture = await self._read_picture(interaction, image)
            if picture is None:
                return
        try:
            recipe = parse_imagine(
                prompt,
                defaults,
                negative=negative,
                aspect=aspect,
                seed=seed,
                steps=steps,
                guidance=guidance,
                max_steps=MAX_STEPS,
                suffix=preferences.suffix,
                default_aspect=preferences.aspect,
                image_aspect=None if picture is None else image_prompt.own_aspect(picture.size),
            )
        except BadInput as error:
            await tell(interaction, str(error))
            return
        fields = recipe.to_dict()
        if picture is not None:
            # Kept before the job is queued, so the runner (or a restart) always finds it; the recipe names it.
            png = await asyncio.to_thread(image_prompt.fit, picture, recipe.width, recipe.height)
            fields["image_prompt"] = await self.bot.store.save_prompt_image(png)
        await submit(interaction, "imagine", fields)

    async def _read_picture(self, interaction: discord.Interaction[ImagineBot], attachment: discord.Attachment):
        """The attached picture, checked; or None once the member has been told privately what is wrong with it.

        The metadata is checked before anything is shown. The download and decode may take a while, so the
        interaction is deferred first (publicly, as the job's message will be); `tell` removes that for a refusal.
        """
        try:
            image_prompt.check_attachment(attachment)
        except BadInput as error:
            await tell(interaction, str(error))
            return None
        await interaction.response.defer(thinking=True)
        try:
            data = await attachment.read()
            return await asyncio.to_thread(image_prompt.open_picture, data, attachment.filename)
        except BadInput as error:
            await tell(interaction, str(error))
        except discord.HTTPException as error:
            log.warning("Could not download image prompt %s: %s", attachment.url, error)
            await tell(interaction, "I couldn't download your image; please try again.")
        return None


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Imagine(bot))
