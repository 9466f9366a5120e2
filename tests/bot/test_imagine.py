"""/imagine end to end: the real bot, the tiny model and discord.py over loopback to the Discord stand-in."""

from __future__ import annotations

from engine.images import read_parameters
from tests.bot.e2e import GRID_TIMEOUT, has_grid, has_upscale, picture, recipe


async def test_imagine_defers_then_posts_a_grid_with_nine_buttons(discord, bot):
    """/imagine is acknowledged within 3 s, shows progress, and ends with a 2x2 grid PNG, its recipe and 9 buttons."""
    run = await discord.slash(discord.alice, "general", "imagine", prompt="a red fox in snow --seed 42")

    ack = await run.acked()
    assert ack.deferred and ack.elapsed < 3
    message = await run.wait_for(has_grid, timeout=GRID_TIMEOUT)

    assert not message.ephemeral
    assert picture(message).size == (128, 128)  # four 64x64 images
    assert [b.get("label") or b["emoji"]["name"] for b in message.buttons] == [
        "U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"
    ]
    embed = message.embeds[0]
    assert "a red fox in snow" in embed["description"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Seeds"] == "42, 43, 44, 45"
    assert fields["Size"] == "64×64"
    progress = [v for v in message.history if "step 1/4" in v.content]
    assert progress and progress[0].attachments[0].filename == "preview.png", "progress was never shown"


async def make_grid(discord, user="alice", channel="general", prompt="a red fox in snow --seed 42"):
    run = await discord.slash(user, channel, "imagine", prompt=prompt)
    return await run.wait_for(has_grid, timeout=GRID_TIMEOUT)


def seeds_of(message) -> list[int]:
    fields = {f["name"]: f["value"] for f in message.embeds[0]["fields"]}
    return [int(s) for s in (fields.get("Seeds") or fields["Seed"]).split(", ")]


async def test_u2_upscales_the_second_image_twice_as_large(discord, bot):
    """U2 makes a 2x upscale of image 2: one 128x128 PNG whose recipe carries image 2's seed, with Vary buttons."""
    grid = await make_grid(discord)

    click = await discord.click(discord.bob, grid, "U2")
    assert (await click.acked()).elapsed < 3
    upscale = await click.wait_for(has_upscale, GRID_TIMEOUT)

    assert picture(upscale).size == (128, 128)
    assert "Seed: 43" in read_parameters(upscale.attachments[0].data)
    assert f"<@{discord.bob.id}>" in upscale.content  # whoever clicks owns the new job
    assert "image #2 of job" in {f["name"]: f["value"] for f in upscale.embeds[0]["fields"]}["From"]
    assert [b.get("label") or b["emoji"]["name"] for b in upscale.buttons] == [
        "Vary (Subtle)", "Vary (Strong)", "Zoom Out 2x", "Zoom Out 1.5x", "Custom Zoom", "⬅️", "➡️", "⬆️", "⬇️"]
    assert [len(row["components"]) for row in upscale.components] == [2, 3, 4]  # two rows under Vary


async def test_the_posted_grid_and_upscale_carry_their_recipe(discord, bot):
    """The grid and the upscale PNGs posted on Discord carry the recipe other SD tools read, as the embed shows it."""
    grid = await make_grid(discord, prompt="a red fox in snow --no people --seed 42 --guidance 6.5")
    upscale = await (await discord.click(discord.alice, grid, "U2")).wait_for(has_upscale, GRID_TIMEOUT)

    shown = {f["name"]: f["value"] for f in grid.embeds[0]["fields"]}
    posted = recipe(grid)
    assert posted["prompt"] == "a red fox in snow" and posted["Negative prompt"] == "people"
    assert (posted["Seed"], posted["Grid seeds"]) == ("42", '"42, 43, 44, 45"')
    assert f'{posted["Steps"]} · {posted["CFG scale"]}' == shown["Steps · Guidance"] == "4 · 6.5"
    assert posted["Size"] == "64x64" and posted["Model"] == shown["Model"] and posted["Sampler"]
    big = recipe(upscale)
    assert (big["prompt"], big["Negative prompt"], big["Seed"], big["Size"]) == (
        "a red fox in snow", "people", "43", "128x128")
    assert {"Steps", "Sampler", "CFG scale", "Model"} <= big.keys()


async def test_vary_subtle_on_an_upscale_gives_a_grid_at_the_original_size(discord, bot):
    """Vary (Subtle) on an upscaled image makes a new grid at the size the grid was made at, not twice that."""
    grid = await make_grid(discord)
    upscale = await (await discord.click(discord.alice, grid, "U1")).wait_for(
        has_upscale, GRID_TIMEOUT)

    vary = await (await discord.click(discord.alice, upscale, "Vary (Subtle)")).wait_for(has_grid, GRID_TIMEOUT)

    assert vary.embeds[0]["author"]["name"].startswith("Variations")
    assert picture(vary).size == (128, 128)


async def test_v3_and_reroll_make_new_grids_with_new_seeds(discord, bot):
    """V3 gives four variations of image 3 as a new grid; 🔄 gives a new grid of the same prompt with other seeds."""
    grid = await make_grid(discord)

    variations = await (await discord.click(discord.alice, grid, "V3")).wait_for(has_grid, GRID_TIMEOUT)
    reroll = await (await discord.click(discord.alice, grid, "🔄")).wait_for(has_grid, GRID_TIMEOUT)

    assert variations.embeds[0]["author"]["name"].startswith("Variations")
    assert "image #3 of job" in variations.embeds[0]["fields"][-3]["value"]
    assert picture(variations).size == (128, 128)
    assert reroll.embeds[0]["author"]["name"].startswith("Reroll")
    assert "a red fox in snow" in reroll.embeds[0]["description"]
    assert set(seeds_of(reroll)).isdisjoint(seeds_of(grid))
    assert picture(reroll).tobytes() != picture(grid).tobytes()


async def test_invalid_aspect_ratio_is_refused_privately(discord, bot):
    """An invalid --ar gets an ephemeral message that says what is wrong and what is allowed; no job starts."""
    run = await discord.slash(discord.alice, "general", "imagine", prompt="a fox --ar 16x9")

    refusal = await run.wait_for(lambda m: m.ephemeral)
    assert "16x9" in refusal.content and "16:9" in refusal.content
    assert not any(has_grid(m) for m in discord.messages("general"))
    assert await bot.store.unfinished_jobs() == []


async def test_unknown_flag_and_out_of_range_steps_are_refused(discord, bot):
    """Unknown flags and steps out of range say exactly what is allowed."""
    unknown = await discord.slash(discord.alice, "general", "imagine", prompt="a fox --chaos 50")
    assert "--chaos" in (await unknown.wait_for(lambda m: m.ephemeral)).content

    steps = await discord.slash(discord.alice, "general", "imagine", prompt="a fox --steps 500")
    assert "from 1 to 150" in (await steps.wait_for(lambda m: m.ephemeral)).content
