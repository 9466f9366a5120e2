"""Images the safety checker flags are never posted plainly."""

from __future__ import annotations

import io

from PIL import Image

from tests.bot.e2e import GRID_TIMEOUT, job_id, recipe


def spoiler_grid(message) -> bool:
    return any(a.filename == "SPOILER_grid.png" for a in message.attachments)


async def grid_of_job(bot, message) -> bytes:
    return await bot.store.grid(job_id(message))


async def test_flagged_images_are_blurred_spoilers_where_nsfw_is_not_allowed(discord, start_bot, tiny_model_nsfw):
    """In a normal channel flagged images are blurred, posted as a spoiler, with a note saying why and the recipe."""
    bot = await start_bot(IMAGINE_MODEL=str(tiny_model_nsfw))

    run = await discord.slash(discord.alice, "general", "imagine", prompt="a fox --seed 7")
    message = await run.wait_for(spoiler_grid, GRID_TIMEOUT)

    assert "blurred" in message.embeds[0]["footer"]["text"]
    posted = Image.open(io.BytesIO(message.attachments[0].data))
    original = Image.open(io.BytesIO(await grid_of_job(bot, message)))
    assert posted.size == original.size and posted.tobytes() != original.tobytes()
    assert "image" not in message.embeds[0]  # never shown unspoilered inside the embed
    assert (recipe(message)["prompt"], recipe(message)["Grid seeds"], recipe(message)["Size"]) == (
        "a fox", '"7, 8, 9, 10"', "64x64")

    upscale = await (await discord.click(discord.alice, message, "U1")).wait_for(
        lambda m: any(a.filename == "SPOILER_upscale.png" for a in m.attachments), GRID_TIMEOUT)
    assert (recipe(upscale)["prompt"], recipe(upscale)["Seed"], recipe(upscale)["Size"]) == ("a fox", "7", "128x128")


async def test_flagged_images_are_plain_spoilers_in_age_restricted_channels_that_allow_nsfw(discord, start_bot, tiny_model_nsfw):
    """Where a moderator allowed NSFW in an age-restricted channel, flagged images are spoilers, not blurred."""
    bot = await start_bot(IMAGINE_MODEL=str(tiny_model_nsfw))
    await (await discord.slash(discord.mod, "nsfw-art", "limits set", nsfw_allowed=True)).wait_for(lambda m: m.ephemeral)

    run = await discord.slash(discord.alice, "nsfw-art", "imagine", prompt="a fox")
    message = await run.wait_for(spoiler_grid, GRID_TIMEOUT)

    assert "spoiler" in message.embeds[0]["footer"]["text"]
    posted = Image.open(io.BytesIO(message.attachments[0].data))
    original = Image.open(io.BytesIO(await grid_of_job(bot, message)))
    assert posted.tobytes() == original.tobytes()


async def test_nsfw_allowed_is_ignored_outside_age_restricted_channels(discord, start_bot, tiny_model_nsfw):
    """A moderator allowing NSFW in a normal channel still gets blurred images there."""
    await start_bot(IMAGINE_MODEL=str(tiny_model_nsfw))
    await (await discord.slash(discord.mod, "general", "limits set", nsfw_allowed=True)).wait_for(lambda m: m.ephemeral)

    run = await discord.slash(discord.alice, "general", "imagine", prompt="a fox")
    message = await run.wait_for(spoiler_grid, GRID_TIMEOUT)
    assert "blurred" in message.embeds[0]["footer"]["text"]
