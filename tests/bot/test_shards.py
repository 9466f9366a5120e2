"""DISCORD_SHARDS: the real bot over one gateway connection per shard, against the stand-in's two servers."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from tests.bot.e2e import GRID_TIMEOUT, has_grid
from tests.bot.test_restart import REPO


async def test_two_shards_connect_and_serve_imagine_in_a_server_of_each(discord, start_bot):
    """DISCORD_SHARDS=2: both shards identify, each server's /imagine arrives on its own shard and gets a grid."""
    await start_bot(DISCORD_SHARDS="2")
    assert discord.shards == [(0, 2), (1, 2)]

    here = await discord.slash(discord.alice, "general", "imagine", prompt="a fox on shard zero --seed 1")
    there = await discord.slash(discord.carol, "elsewhere", "imagine", prompt="a fox on shard one --seed 2")

    for run in (here, there):
        assert (await run.acked()).elapsed < 3
        grid = await run.wait_for(has_grid, timeout=GRID_TIMEOUT)
        assert grid.channel_id == run.channel.id and grid.buttons
    for shard, run in ((0, here), (1, there)):
        delivered = [d["id"] for name, d in discord.connection(shard).dispatched if name == "INTERACTION_CREATE"]
        assert delivered == [str(run.id)]


async def test_auto_shards_follow_discords_recommendation_and_say_one_ready_line(discord, start_bot, caplog):
    """DISCORD_SHARDS=auto takes Discord's shard count; the ready line comes once, when all shards are ready."""
    discord.recommended_shards = 2
    caplog.set_level(logging.INFO, logger="bot.bot")

    await start_bot(DISCORD_SHARDS="auto")

    assert discord.shards == [(0, 2), (1, 2)]
    ready = [r.getMessage() for r in caplog.records if "imagine-bot ready" in r.getMessage()]
    assert len(ready) == 1 and "2 server(s) on 2 shard(s)" in ready[0], ready


async def test_a_bad_shard_count_stops_start_up_with_one_line(discord):
    """DISCORD_SHARDS=0 (or not a number) ends `python -m bot` at once with one readable line, before any login."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", cwd=REPO, env=os.environ | discord.env | {"DISCORD_SHARDS": "0"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), 60)

    assert process.returncode == 1
    assert output.decode().strip() == (
        "imagine-bot: DISCORD_SHARDS must be auto or a whole number of shards (1 or more), got '0'")
    assert not discord.requests
