"""/show posts a finished job again; ❌ and "Delete image" delete a result, for its requester and moderators only."""

from __future__ import annotations

from tests.bot.e2e import GRID_TIMEOUT, has_grid, has_upscale, job_id


async def make_grid(discord, user="alice", channel="general"):
    run = await discord.slash(user, channel, "imagine", prompt="a red fox in snow --seed 42")
    return await run.wait_for(has_grid, GRID_TIMEOUT)


async def refused(run, says: str) -> None:
    """The only answer is an ephemeral message saying why."""
    message = await run.wait_for(lambda m: says in m.content)
    assert message.ephemeral and all(m.ephemeral for m in run.messages if not m.deleted), run.messages


async def test_show_posts_the_picture_again_with_working_buttons_for_the_owner_and_a_moderator(discord, bot):
    """/show by the requester (in another channel) and by a moderator posts the grid again; its U1 upscales."""
    grid = await make_grid(discord)
    job = job_id(grid)

    mine = await (await discord.slash(discord.alice, "art", "show", job=job)).wait_for(has_grid)
    theirs = await (await discord.slash(discord.mod, "general", "show", job=job)).wait_for(has_grid)

    for shown in (mine, theirs):
        assert not shown.ephemeral and shown.attachments[0].data == grid.attachments[0].data
        assert shown.buttons == grid.buttons and shown.embeds[0]["author"] == grid.embeds[0]["author"]
    assert not discord.pinged(mine) and not discord.pinged(theirs)
    assert mine.channel_id == discord.channel("art").id
    upscale = await (await discord.click(discord.bob, mine, "U1")).wait_for(has_upscale, GRID_TIMEOUT)
    assert "image #1 of job" in {f["name"]: f["value"] for f in upscale.embeds[0]["fields"]}["From"]


async def test_show_is_refused_privately_for_someone_elses_job_and_another_servers(discord, bot):
    """/show of alice's job by bob, in another server (even by alice), of an unfinished job and of pruned images
    are refused ephemerally; nothing posts."""
    job = job_id(await make_grid(discord))
    slow = await discord.slash(discord.bob, "general", "imagine", prompt="a slow fox --steps 50")
    running = job_id(await slow.wait_for(lambda m: "step" in m.content, GRID_TIMEOUT))  # its Cancel button

    await refused(await discord.slash(discord.bob, "general", "show", job=job), "someone else's")
    await refused(await discord.slash(discord.alice, "elsewhere", "show", job=job),
                  f"There is no job #{job} in this server.")
    await refused(await discord.slash(discord.carol, "elsewhere", "show", job=job + 1000),
                  f"There is no job #{job + 1000} in this server.")
    await refused(await discord.slash(discord.bob, "general", "show", job=running), "isn't finished yet")
    await (await discord.slash(discord.bob, "general", "cancel", job=running)).wait_for(
        lambda m: "Cancelled" in m.content)
    assert await bot.store.prune_images(0) == 1
    await refused(await discord.slash(discord.alice, "general", "show", job=job), "cleaned up")
    assert not [m for m in discord.messages("elsewhere") if m.attachments]
    assert len([m for m in discord.messages("general") if has_grid(m)]) == 1


async def test_a_cross_from_the_owner_deletes_and_anyone_elses_changes_nothing(discord, bot):
    """bob's ❌ leaves the grid; alice's ❌ on her /show copy deletes it and the images; then buttons say so."""
    grid = await make_grid(discord)
    job = job_id(grid)
    copy = await (await discord.slash(discord.alice, "art", "show", job=job)).wait_for(has_grid)

    await discord.react(discord.bob, grid, "❌")
    await discord.react(discord.alice, copy, "❌")  # handled after bob's: once it shows, bob's was decided

    await discord.wait_until(lambda: copy.deleted, what="the /show copy deleted")
    assert not grid.deleted and (await bot.store.get_job(job)).images_deleted_at is not None
    assert not (bot.store.images_dir / str(job)).exists()
    await refused(await discord.click(discord.bob, grid, "U1"), f"The images of job #{job} were deleted")
    await refused(await discord.slash(discord.alice, "general", "show", job=job), "were deleted")

    await discord.react(discord.alice, grid, "❌")
    await discord.wait_until(lambda: grid.deleted, what="the grid deleted")


async def test_delete_image_answers_privately_and_only_for_the_owner_or_a_moderator(discord, bot):
    """Apps → Delete image by bob is refused privately; by a moderator it deletes the grid and says so privately."""
    grid = await make_grid(discord)
    job = job_id(grid)

    await refused(await discord.message_command(discord.bob, grid, "Delete image"), "Only the member who made")
    assert not grid.deleted and (await bot.store.get_job(job)).images_deleted_at is None
    said = await discord.say(discord.bob, "general", "not a picture")
    await refused(await discord.message_command(discord.bob, said, "Delete image"), "isn't one of my pictures")

    done = await discord.message_command(discord.mod, grid, "Delete image")

    await refused(done, f"Deleted the picture of job #{job}")
    assert grid.deleted and (await bot.store.get_job(job)).images_deleted_at is not None
