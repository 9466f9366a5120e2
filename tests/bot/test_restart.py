"""Restarts: the bot runs as a real process (`python -m bot`), is stopped or killed, and a new one carries on."""

from __future__ import annotations

import asyncio
import io
import os
import sys
from pathlib import Path

import pytest
from PIL import Image

from engine.jobs import size_for_aspect
from tests.bot.e2e import has_grid, has_upscale, picture, recipe

REPO = Path(__file__).resolve().parents[2]
SLOW = 120  # a cold process imports torch and diffusers before it connects
# Crash tests kill the bot right after a job's first step; at 256 px its 50 steps take seconds, not a fraction of one,
# so the job is still running when the kill lands (at the tiny model's 64 px it could finish first).
LONG_JOBS = {"IMAGINE_SIZE": "256"}


class BotProcess:
    """`python -m bot` with the environment a server owner would put in .env."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, discord) -> None:
        seen = discord.identifies
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", cwd=REPO, env=os.environ | self.env, stdout=out, stderr=out
            )
        await discord.wait_for_connection(SLOW, identifies=seen + 1)

    async def stop(self) -> None:
        """A polite stop (SIGTERM), as systemd or docker would."""
        self.process.terminate()
        assert await asyncio.wait_for(self.process.wait(), SLOW) == 0

    async def crash(self) -> None:
        """A hard crash: the process gets no chance to tidy up."""
        self.process.kill()
        await self.process.wait()


@pytest.fixture
async def bot_process(discord, bot_env, tmp_path):
    process = BotProcess(bot_env, tmp_path / "bot.log")
    yield process
    if process.process and process.process.returncode is None:
        process.process.kill()
        await process.process.wait()
    print(process.log.read_text(errors="replace")[-5000:])  # shown by pytest when the test failed


async def test_bot_restarted_between_the_result_and_the_click_still_serves_u1(discord, bot_process):
    """A grid made before a restart keeps working buttons: U1 after the restart gives the upscale."""
    await bot_process.start(discord)
    grid = await (await discord.slash(discord.alice, "general", "imagine", prompt="a lighthouse")).wait_for(has_grid, SLOW)
    await bot_process.stop()

    await bot_process.start(discord)
    click = await discord.click(discord.alice, grid, "U1")

    assert (await click.acked()).elapsed < 3
    upscale = await click.wait_for(has_upscale, SLOW)
    assert picture(upscale).size == (128, 128)


async def test_bot_killed_with_a_running_and_a_queued_job_finishes_both_after_restart(discord, bot_process):
    """Jobs running or waiting when the bot crashed run after the restart, and their own messages get the grids;
    the waiting one is an image prompt, which still starts from its picture."""
    bot_process.env |= LONG_JOBS
    await bot_process.start(discord)
    slow = await discord.slash(discord.alice, "general", "imagine", prompt="a slow fox --steps 50")
    await slow.wait_for(lambda m: "step" in m.content, SLOW)
    owl = io.BytesIO()
    Image.new("RGB", (128, 64), "white").save(owl, format="PNG")
    waiting = await discord.slash(discord.bob, "general", "imagine", prompt="a patient owl --iw 2",
                                  image=("owl.png", owl.getvalue()))
    await waiting.wait_for(lambda m: "Waiting to start" in m.content, SLOW)
    await bot_process.crash()

    await bot_process.start(discord)

    slow_grid = await slow.wait_for(has_grid, SLOW)
    waiting_grid = await waiting.wait_for(has_grid, SLOW)
    assert "a slow fox" in slow_grid.embeds[0]["description"]
    assert "a patient owl" in waiting_grid.embeds[0]["description"]
    assert any("the bot restarted" in version.content for version in waiting_grid.history)
    size = "{}x{}".format(*size_for_aspect(int(LONG_JOBS["IMAGINE_SIZE"]), "2:1"))  # the picture's own aspect
    assert (recipe(waiting_grid)["Denoising strength"], recipe(waiting_grid)["Size"]) == ("0.5", size)


async def test_a_job_running_at_two_crashes_fails_with_a_reason_and_the_queue_goes_on(discord, bot_process):
    """A job the bot died making twice (say the OOM killer) is not run a third time: its message says why, and the
    job queued behind it gets its grid."""
    bot_process.env |= LONG_JOBS
    await bot_process.start(discord)
    poison = await discord.slash(discord.alice, "general", "imagine", prompt="a huge fox --steps 50")
    await poison.wait_for(lambda m: "step" in m.content, SLOW)
    waiting = await discord.slash(discord.bob, "general", "imagine", prompt="a patient owl")
    await waiting.wait_for(lambda m: "Waiting to start" in m.content, SLOW)
    await bot_process.crash()

    await bot_process.start(discord)  # the first crash: the job runs again, first
    await poison.wait_for(lambda m: "step" in m.content and any("restarted" in v.content for v in m.history), SLOW)
    await bot_process.crash()

    await bot_process.start(discord)

    failed = await poison.wait_for(lambda m: "❌" in m.content, SLOW)
    assert "The bot stopped twice while making this" in failed.content
    assert not has_grid(failed)
    owl = await waiting.wait_for(has_grid, SLOW)
    assert "a patient owl" in owl.embeds[0]["description"]
    assert not has_grid(poison.messages[0])


async def test_a_wrong_token_stops_start_up_with_one_readable_line(discord, bot_env):
    """`python -m bot` with a token Discord refuses exits non-zero and says what to do, without a traceback."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", cwd=REPO, env=os.environ | bot_env | {"DISCORD_TOKEN": "not-the-token"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), SLOW)

    assert process.returncode != 0
    assert "Discord refused DISCORD_TOKEN" in stderr.decode()
    assert "Traceback" not in stderr.decode()
