"""Cross-user batching end to end: the real bot on the stand-in, jobs of several members in one pipeline call."""

from __future__ import annotations

from engine.images import read_parameters
from tests.bot.e2e import GRID_TIMEOUT, has_grid, job_id, picture


def fields_of(message) -> dict[str, str]:
    return {f["name"]: f["value"] for f in message.embeds[0]["fields"]}


async def test_three_members_with_one_recipe_share_a_call_and_each_gets_their_own_grid(discord, start_bot):
    """Jobs of alice, bob and mod with one recipe run in one call, each with its own progress, grid, seeds and recipe;
    the owner's job of another size, queued before bob's, runs in a call of its own afterwards."""
    bot = await start_bot(IMAGINE_MAX_BATCH="4")
    wanted = {"alice": ("general", "a red fox", 10), "owner": ("general", "a wide lake --ar 2:1", 20),
              "bob": ("art", "a blue owl", 30), "mod": ("nsfw-art", "a green frog", 40)}
    async with bot.runner.held():  # line the jobs up as a busy server would, without racing the engine
        runs = {user: await discord.slash(user, channel, "imagine", prompt=f"{prompt} --seed {seed}")
                for user, (channel, prompt, seed) in wanted.items()}
        for run in runs.values():
            await run.wait_for(lambda m: "Waiting to start" in m.content, GRID_TIMEOUT)

    grids = {user: await run.wait_for(has_grid, GRID_TIMEOUT) for user, run in runs.items()}

    jobs = {user: await bot.store.get_job(job_id(grid)) for user, grid in grids.items()}
    batch = [jobs[user] for user in ("alice", "bob", "mod")]
    assert len({job.started_at for job in batch}) == 1  # claimed together...
    assert len({job.result["elapsed"] for job in batch}) == 1  # ...and made by one pipeline call
    assert jobs["owner"].started_at > batch[0].started_at
    for user, grid in grids.items():
        _, prompt, seed = wanted[user]
        prompt = prompt.split(" --")[0]
        assert prompt in grid.embeds[0]["description"] and f"<@{getattr(discord, user).id}>" in grid.content
        assert fields_of(grid)["Seeds"] == ", ".join(str(seed + n) for n in range(4))
        recipes = [read_parameters(await bot.store.image(jobs[user].id, n + 1)) for n in range(4)]  # what U1-U4 use
        assert all(r.startswith(prompt) and f"Seed: {seed + n}," in r for n, r in enumerate(recipes)), recipes
        if user != "owner":  # the owner's progress may yield its channel's edit allowance to results (EditBudget)
            progress = [version for version in grid.history if "step 1/4" in version.content]
            assert progress and progress[0].attachments[0].filename == "preview.png", f"{user} saw no progress"
    assert picture(grids["owner"]).size != picture(grids["alice"]).size
    assert len({picture(grid).tobytes() for grid in grids.values()}) == 4
