"""/settings, /prefer suffix and Remix mode, end to end through the real bot on the Discord stand-in."""

from __future__ import annotations

from engine.jobs import size_for_aspect
from tests.bot.e2e import GRID_TIMEOUT, has_grid, recipe


async def open_settings(discord, user):
    run = await discord.slash(user, "general", "settings")
    ack = await run.acked()
    assert ack.type == 4 and ack.elapsed < 3, ack
    panel = await run.response_message()
    assert panel.ephemeral
    return panel


async def update(click):
    """A panel click is answered by redrawing the clicked panel in place (callback type 7), at once."""
    ack = await click.acked()
    assert ack.type == 7 and ack.elapsed < 3, (ack, click.refusals)
    return click.source_message


async def test_settings_persist_across_a_restart_and_the_suffix_and_default_aspect_apply(discord, start_bot):
    """Panel changes survive a restart (and the old panel still works); the suffix and default aspect shape prompts."""
    bot = await start_bot()
    panel = await open_settings(discord, discord.alice)
    assert "Remix mode: **off**" in panel.content and "Variation mode: **Strong**" in panel.content
    await update(await discord.click(discord.alice, panel, "Remix mode: off"))
    await update(await discord.click(discord.alice, panel, "Subtle variations"))
    await update(await discord.select(discord.alice, panel, "Default aspect ratio", ["3:2"]))
    assert "Remix mode: **on" in panel.content and "Subtle" in panel.content and "**3:2**" in panel.content
    assert panel.edits == 3 and [b["label"] for b in panel.buttons][0] == "Remix mode: on"
    suffix = await discord.slash(discord.alice, "general", "prefer suffix", value="golden hour --no text")
    assert "golden hour --no text" in (await suffix.response_message()).content
    await bot.close()

    await start_bot()
    again = await open_settings(discord, discord.alice)
    assert again.content == panel.content.replace("Suffix: none", "Suffix: `golden hour --no text`")  # in SQLite
    fresh = await open_settings(discord, discord.bob)
    assert "Remix mode: **off**" in fresh.content and "suffix: none" in fresh.content.lower()  # per member
    await update(await discord.click(discord.alice, panel, "Remix mode: on"))  # a panel from before the restart
    assert "Remix mode: **off**" in panel.content

    plain = await (await discord.slash(discord.alice, "general", "imagine", prompt="a fox")).wait_for(
        has_grid, GRID_TIMEOUT)
    made = recipe(plain)
    width, height = size_for_aspect(64, "3:2")
    assert (made["prompt"], made["Negative prompt"], made["Size"]) == ("a fox golden hour", "text", f"{width}x{height}")
    varied = await (await discord.click(discord.alice, plain, "V1")).wait_for(has_grid, GRID_TIMEOUT)
    assert "Variations (subtle) of image #1" in varied.content  # V1-V4 follow the variation mode
    flagged = await (await discord.slash(discord.alice, "general", "imagine", prompt="a cat --ar 1:1 --no dogs",
                                         aspect="16:9")).wait_for(has_grid, GRID_TIMEOUT)
    made = recipe(flagged)  # the option beats the prompt's flag, and the prompt's flag beats the suffix's
    width, height = size_for_aspect(64, "16:9")
    assert (made["prompt"], made["Negative prompt"], made["Size"]) == ("a cat golden hour", "dogs", f"{width}x{height}")

    await update(await discord.click(discord.alice, panel, "Reset"))
    assert "Variation mode: **Strong**" in panel.content and "the model’s" in panel.content
    assert "golden hour" in panel.content  # Reset is the panel's; the suffix has /prefer suffix
    cleared = await discord.slash(discord.alice, "general", "prefer suffix")
    assert "cleared" in (await cleared.response_message()).content


async def test_a_suffix_goes_through_the_checks_of_a_prompt(discord, bot):
    """An unknown flag, a bad value or a banned word in a suffix is refused privately and not saved."""
    await bot.store.add_banned_word(discord.guild.id, "wolf")
    for value, says in [("--zoom 2", "`--zoom` is not an option"), ("--ar 9:1", "too extreme"),
                        ("a grey wolf", "“wolf”")]:
        run = await discord.slash(discord.alice, "general", "prefer suffix", value=value)
        refusal = await run.response_message()
        assert refusal.ephemeral and says in refusal.content, refusal.content
    assert (await bot.store.preferences(discord.guild.id, discord.alice.id)).suffix == ""


async def test_remix_opens_the_prompt_to_edit_and_refuses_a_banned_word(discord, bot):
    """With Remix on, 🔄 opens "Remix" with the prompt and flags; the edit makes the new job, a banned word not."""
    await update(await discord.click(discord.alice, await open_settings(discord, discord.alice), "Remix mode: off"))
    grid = await (await discord.slash(discord.alice, "general", "imagine",
                                      prompt="a red fox --ar 3:2 --no text")).wait_for(has_grid, GRID_TIMEOUT)

    reroll = await discord.click(discord.alice, grid, "🔄")
    modal = await reroll.opened_modal()
    assert (await reroll.acked()).elapsed < 3 and modal["title"] == "Remix"
    assert modal["components"][0]["component"]["value"] == "a red fox --ar 3:2 --no text"
    edited = await discord.submit_modal(reroll, {"prompt": "a blue fox at dusk --ar 3:2 --no text, people"})
    remixed = await edited.wait_for(has_grid, GRID_TIMEOUT)
    made = recipe(remixed)
    assert (made["prompt"], made["Negative prompt"], made["Size"]) == (
        "a blue fox at dusk", "text, people", "{}x{}".format(*size_for_aspect(64, "3:2")))
    assert remixed.embeds[0]["author"]["name"].startswith("Remix · Reroll") and "Remix" in remixed.content

    await bot.store.add_banned_word(discord.guild.id, "wolf")
    vary = await discord.click(discord.alice, remixed, "V2")
    await vary.opened_modal()
    refused = await discord.submit_modal(vary, {"prompt": "a grey wolf --ar 3:2"})
    refusal = await refused.wait_for(lambda m: "wolf" in m.content)
    assert refusal.ephemeral and all(m.ephemeral for m in refused.messages)
    assert (await refused.acked()).type == 4  # no public "thinking…" shown and taken back
    assert await bot.store.unfinished_jobs() == []
