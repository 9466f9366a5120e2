"""/limits end to end: moderators set per-channel limits and banned words; members are refused privately."""

from __future__ import annotations

import re

from bot.cogs.limits import LimitsCog
from bot.store import LIMIT_RANGES
from tests.bot.e2e import GRID_TIMEOUT, has_grid


async def test_plain_member_cannot_change_limits_even_when_discord_shows_the_command(discord, bot):
    """/limits is hidden from members, and a member who gets it anyway (a server override) is refused, nothing changes."""
    definition = next(c for c in discord.guild_commands.get(discord.guild.id, []) or discord.global_commands if c["name"] == "limits")
    assert int(definition["default_member_permissions"]) & (1 << 4)  # hidden unless Manage Channels

    discord.enforce_default_permissions = False  # a server admin let everyone see /limits
    run = await discord.slash(discord.alice, "general", "limits set", jobs_per_hour=100)

    refusal = await run.wait_for(lambda m: m.ephemeral)
    assert "Only moderators" in refusal.content
    assert (await bot.store.limits_for(discord.guild.id, discord.channel("general").id)).jobs_per_hour == 10


async def test_moderator_limit_of_two_per_hour_refuses_the_third_with_a_retry_time(discord, bot):
    """A moderator sets 2 jobs per hour in #art; the member's third /imagine there is refused with when to retry."""
    setting = await discord.slash(discord.mod, "art", "limits set", jobs_per_hour=2)
    assert "2" in (await setting.wait_for(lambda m: m.ephemeral and "Updated" in m.content)).content

    for n in range(2):
        run = await discord.slash(discord.alice, "art", "imagine", prompt=f"a fox number {n}")
        await run.wait_for(has_grid, GRID_TIMEOUT)
    third = await discord.slash(discord.alice, "art", "imagine", prompt="a third fox")

    refusal = await third.wait_for(lambda m: m.ephemeral)
    assert "2 requests per hour" in refusal.content and (await third.acked()).type == 4  # private from the start
    retry_at = int(re.search(r"<t:(\d+):R>", refusal.content).group(1))
    assert retry_at > discord.now() + 3000  # about an hour after the first job
    assert not any(m.content and "a third fox" in m.content for m in discord.messages("art") if not m.ephemeral)

    # Other channels keep the default, and so do other members.
    elsewhere = await discord.slash(discord.alice, "general", "imagine", prompt="a fox elsewhere")
    await elsewhere.wait_for(has_grid, GRID_TIMEOUT)


async def test_banned_word_is_refused_and_named(discord, bot):
    """A phrase a moderator banned is refused (whole words, any case) with the phrase named; others pass."""
    ban = await discord.slash(discord.mod, "general", "limits ban", phrase="Red Fox")
    await ban.wait_for(lambda m: m.ephemeral and "refused" in m.content)

    run = await discord.slash(discord.alice, "general", "imagine", prompt="A RED FOX in snow")
    refusal = await run.wait_for(lambda m: m.ephemeral)
    assert "red fox" in refusal.content
    assert (await run.acked()).type == 4  # answered with the private message itself: no public "thinking…" first

    fine = await discord.slash(discord.alice, "general", "imagine", prompt="a redder foxglove")
    await fine.wait_for(has_grid, GRID_TIMEOUT)


async def test_disabled_channel_and_size_limits_are_refused(discord, bot):
    """With the bot disabled in a channel, or a max side below the request, members are told why."""
    await (await discord.slash(discord.mod, "art", "limits set", enabled=False)).wait_for(lambda m: m.ephemeral)
    off = await discord.slash(discord.alice, "art", "imagine", prompt="a fox")
    assert "switched off" in (await off.wait_for(lambda m: m.ephemeral)).content

    await (await discord.slash(discord.mod, "general", "limits set", max_side=64)).wait_for(lambda m: m.ephemeral)
    wide = await discord.slash(discord.alice, "general", "imagine", prompt="a fox", aspect="16:9")
    assert "at most 64 px" in (await wide.wait_for(lambda m: m.ephemeral)).content


async def test_limits_show_and_reset(discord, bot):
    """A server default applies to channels without their own value; show names where each value comes from."""
    await (await discord.slash(discord.mod, "general", "limits set", max_steps=20, server_default=True)).wait_for(lambda m: m.ephemeral)
    await (await discord.slash(discord.mod, "art", "limits set", max_steps=8)).wait_for(lambda m: m.ephemeral)

    shown = await (await discord.slash(discord.mod, "art", "limits show")).wait_for(lambda m: m.ephemeral and "Limits" in m.content)
    assert "Most steps: **8** (set for this channel)" in shown.content
    general = await (await discord.slash(discord.mod, "general", "limits show")).wait_for(lambda m: m.ephemeral and "Limits" in m.content)
    assert "Most steps: **20** (server default)" in general.content

    await (await discord.slash(discord.mod, "art", "limits reset", setting="max_steps")).wait_for(lambda m: m.ephemeral)
    limits = await bot.store.limits_for(discord.guild.id, discord.channel("art").id)
    assert limits.max_steps == 20


def test_the_limits_command_offers_exactly_the_ranges_the_store_accepts():
    """Discord's number fields of /limits set stop where the store's checks do, so no value it offers is refused."""
    offered = {p.name: (p.min_value, p.max_value) for p in LimitsCog.set_.parameters if p.name in LIMIT_RANGES}
    assert offered == LIMIT_RANGES
