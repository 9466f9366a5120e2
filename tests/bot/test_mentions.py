"""Text members type is shown, never obeyed: mentions in prompts ping no one; only a late result pings its requester."""

from __future__ import annotations

from tests.bot.e2e import GRID_TIMEOUT, has_grid


async def test_a_prompt_full_of_mentions_pings_nobody_and_only_a_late_result_pings_the_requester(discord, bot):
    """Mentions in a prompt stay visible but inert; the one ping is alice's, on the channel message after expiry."""
    moderator = discord.guild.role("Moderator")
    mentions = f"{discord.bob.mention} <@!{discord.mod.id}> {moderator.mention} @everyone @here"
    run = await discord.slash(discord.alice, "general", "imagine", prompt=f"hello {mentions} --steps 12",
                              negative=discord.owner.mention)
    running = await run.wait_for(lambda m: "step" in m.content, GRID_TIMEOUT)
    assert discord.bob.mention in running.content and moderator.mention in running.content

    discord.expire_token(run)
    fresh = await discord.wait_for_message("general", lambda m: has_grid(m) and m not in run.messages, GRID_TIMEOUT)

    assert discord.bob.mention in fresh.content and f"<@{discord.alice.id}>" in fresh.content
    assert [(p.message, p.user) for p in discord.pings] == [(fresh, discord.alice)]
