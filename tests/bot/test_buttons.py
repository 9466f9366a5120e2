"""Buttons only ever use a finished job of the same server; every other click is refused privately, at once."""

from __future__ import annotations

from tests.bot.e2e import GRID_TIMEOUT, has_grid, has_upscale, job_id


async def make_grid(discord, user, channel):
    run = await discord.slash(user, channel, "imagine", prompt="a fox")
    return await run.wait_for(has_grid, GRID_TIMEOUT)


async def refused_privately(click, says: str) -> None:
    """The click's only answer is an ephemeral message saying why: no public 'thinking…' ever appeared."""
    ack = await click.acked()
    assert ack.type == 4 and ack.elapsed < 3, ack  # a message at once, not a (public) deferral
    message = await click.response_message()
    assert message.ephemeral and says in message.content, message.content
    assert all(m.ephemeral for m in click.messages) and not any(v.loading for v in message.history)


async def test_clicks_on_unknown_unfinished_or_other_servers_jobs_are_refused_privately(discord, bot):
    """Forged ids of a missing job, a running job and another server's jobs get an ephemeral refusal; nothing runs."""
    grid_a = await make_grid(discord, discord.alice, "general")
    grid_b = await make_grid(discord, discord.carol, "elsewhere")
    slow = await discord.slash(discord.alice, "general", "imagine", prompt="a slow fox --steps 50")
    running = await slow.wait_for(lambda m: "step" in m.content, GRID_TIMEOUT)
    a, b, unfinished = job_id(grid_a), job_id(grid_b), job_id(running)

    for user, message, custom_id, says in [
        (discord.bob, grid_a, "imagine:u:999999999:1", "can't find"),
        (discord.bob, running, f"imagine:u:{unfinished}:1", "isn't finished"),
        (discord.carol, grid_b, f"imagine:u:{a}:1", "can't find"),  # server A's job clicked in server B
        (discord.alice, grid_a, f"imagine:v:{b}:2", "can't find"),  # and B's in A, by a member of both
        (discord.bob, grid_a, "imagine:u:1:9", "isn't on this message"),
    ]:
        await refused_privately(await discord.forge_click(user, message, custom_id), says)

    assert [job.id for job in await bot.store.unfinished_jobs()] == [unfinished]
    assert not any(has_upscale(m) or m.id != grid_b.id and has_grid(m) for m in discord.messages("elsewhere"))


async def test_buttons_of_a_grid_whose_images_were_cleaned_up_say_so_privately(discord, bot):
    """After the retention period, U1 on an old grid is refused with the reason before any public reply."""
    grid = await make_grid(discord, discord.alice, "general")
    assert await bot.store.prune_images(0) == 1

    await refused_privately(await discord.click(discord.alice, grid, "U1"), "cleaned up")
    assert await bot.store.unfinished_jobs() == []


async def test_a_click_over_the_members_hourly_limit_is_refused_privately_before_any_thinking(discord, bot):
    """With one job per hour in #general, alice's U1 on her own grid is refused with the limit named, privately and
    at once (no public "thinking…" shown and taken back); nothing is queued."""
    await bot.store.set_limit(discord.guild.id, discord.channel("general").id, "jobs_per_hour", 1)
    grid = await make_grid(discord, discord.alice, "general")

    await refused_privately(await discord.click(discord.alice, grid, "U1"), "1 request per hour")
    assert await bot.store.unfinished_jobs() == []
