"""The queue as members see it: positions, /queue, /cancel and the Cancel button, failures and expired tokens."""

from __future__ import annotations

import diffusers

from tests.bot.e2e import GRID_TIMEOUT, has_grid, job_id


async def busy_engine(discord, user="alice", steps=50):
    """Start a slow job and wait until it runs, so that the next jobs have to queue."""
    run = await discord.slash(user, "general", "imagine", prompt=f"a slow fox --steps {steps}")
    await run.wait_for(lambda m: "step" in m.content, GRID_TIMEOUT)
    return run


async def test_queue_shows_positions_and_cancel_takes_a_queued_job_back(discord, bot):
    """Queued jobs show their place; /queue lists them; /cancel cancels the member's latest and its message says so."""
    await busy_engine(discord, "bob")
    first = await discord.slash(discord.alice, "general", "imagine", prompt="an owl")
    second = await discord.slash(discord.alice, "general", "imagine", prompt="a heron")
    await first.wait_for(lambda m: "next in the queue" in m.content)
    await second.wait_for(lambda m: "#2 in the queue" in m.content)

    listing = await (await discord.slash(discord.alice, "general", "queue")).wait_for(lambda m: m.ephemeral)
    assert "an owl" in listing.content and "a heron" in listing.content and "#2 in the queue" in listing.content
    assert "Imagine · an owl" in listing.content  # each job says what it is, as its message's embed does

    cancel = await discord.slash(discord.alice, "general", "cancel")
    assert "Cancelled job" in (await cancel.wait_for(lambda m: m.ephemeral and "Cancelled" in m.content)).content
    cancelled = await second.wait_for(lambda m: "Cancelled" in m.content)
    assert cancelled.buttons == []
    await first.wait_for(has_grid, GRID_TIMEOUT)  # the other job still runs


async def test_members_cannot_cancel_each_others_jobs_but_moderators_can(discord, bot):
    """Bob's Cancel click on Alice's job is refused privately; a moderator's /cancel of it works."""
    await busy_engine(discord, "bob")
    owl = await discord.slash(discord.alice, "general", "imagine", prompt="an owl")
    queued = await owl.wait_for(lambda m: "Waiting to start" in m.content)

    refused = await discord.click(discord.bob, queued, "Cancel")
    assert "only cancel your own" in (await refused.wait_for(lambda m: m.ephemeral)).content

    await (await discord.slash(discord.mod, "general", "cancel", job=job_id(queued))).wait_for(lambda m: "Cancelled" in m.content)
    await owl.wait_for(lambda m: "Cancelled" in m.content)


async def test_cancel_button_stops_a_running_job(discord, bot):
    """The Cancel button on a running job stops it between steps; the message says cancelled, the next job runs."""
    slow = await busy_engine(discord, "alice", steps=50)
    running = await slow.wait_for(lambda m: "step" in m.content)

    await discord.click(discord.alice, running, "Cancel")

    await slow.wait_for(lambda m: "Cancelled" in m.content, GRID_TIMEOUT)
    job = (await bot.store.user_jobs(discord.alice.id, discord.guild.id))
    assert job == []
    after = await discord.slash(discord.alice, "general", "imagine", prompt="an owl")
    await after.wait_for(has_grid, GRID_TIMEOUT)


async def test_engine_failure_edits_the_message_and_the_next_job_runs(discord, bot, monkeypatch):
    """A pipeline that blows up fails only that job, with the reason on its message; the next job succeeds."""
    original = diffusers.StableDiffusionPipeline.__call__

    def broken(*args, **kwargs):
        raise RuntimeError("the GPU caught fire")

    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "__call__", broken)
    failed = await discord.slash(discord.alice, "general", "imagine", prompt="a doomed fox")
    message = await failed.wait_for(lambda m: "❌" in m.content, GRID_TIMEOUT)
    assert message.buttons == [] and message.attachments == []

    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "__call__", original)
    fine = await discord.slash(discord.alice, "general", "imagine", prompt="a lucky fox")
    await fine.wait_for(has_grid, GRID_TIMEOUT)


async def test_a_result_discord_keeps_refusing_for_a_while_still_arrives(discord, bot):
    """A late result Discord answers with 429s past discord.py's own retries (it tries 5 times) is sent again later,
    not dropped: the member gets their grid."""
    slow = await busy_engine(discord, "alice")
    discord.expire_token(slow)  # so the result is a fresh channel message: the one post this job makes
    discord.busy_posts = 7

    fresh = await discord.wait_for_message(
        "general", lambda m: has_grid(m) and m not in slow.messages, GRID_TIMEOUT
    )
    assert discord.busy_posts == 0 and f"<@{discord.alice.id}>" in fresh.content


async def test_result_after_the_token_expired_is_a_fresh_message_mentioning_the_member(discord, bot):
    """When the interaction token is no longer accepted, the grid is posted as a new channel message with a ping."""
    slow = await busy_engine(discord, "alice")
    discord.expire_token(slow)

    fresh = await discord.wait_for_message(
        "general", lambda m: has_grid(m) and m not in slow.messages, GRID_TIMEOUT
    )
    assert f"<@{discord.alice.id}>" in fresh.content
    assert len(fresh.buttons) == 9
