"""`python -m bot` starting up: one readable line per problem, retries while Discord is away, and a quiet start."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from tests.bot.test_restart import REPO, SLOW
from tests.conftest import E2E_ENV
from tests.discord_standin import DiscordStandin

NOISE = ("Traceback", "PyNaCl", "davey", "torchvision", "logging in using static token", "connected to Gateway")


class Bot:
    """`python -m bot` as a real process, its stdout and stderr read line by line as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    @classmethod
    async def start(cls, env: dict[str, str]) -> Bot:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", cwd=REPO, env=os.environ | env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        return cls(process)

    async def line(self, predicate: Callable[[str], bool], timeout: float = SLOW) -> str:
        """Wait for the next output line that satisfies the predicate."""

        async def read() -> str:
            while raw := await self.process.stdout.readline():
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                if predicate(self.lines[-1]):
                    return self.lines[-1]
            raise AssertionError(f"python -m bot ended (rc {await self.process.wait()}):\n" + self.output)

        return await asyncio.wait_for(read(), timeout)

    async def terminate(self) -> int:
        """SIGTERM, as systemd or docker stop it; returns the exit code once the rest of the output is read."""
        self.process.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(self.process.communicate(), 15)
        self.lines += rest.decode(errors="replace").splitlines()
        return self.process.returncode

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def owner_env(discord_env: dict[str, str], tiny_model: Path, tmp_path: Path) -> dict[str, str]:
    return discord_env | E2E_ENV | {"IMAGINE_MODEL": str(tiny_model), "DATA_DIR": str(tmp_path / "data")}


def unreachable(line: str) -> bool:
    return "Can't reach Discord" in line


async def test_unreachable_discord_is_one_line_per_try_and_sigterm_stops_the_retries(tiny_model, tmp_path):
    """Nothing listening at DISCORD_API_BASE: a readable line per try, no traceback, and SIGTERM exits with 0."""
    port = free_port()
    bot = await Bot.start(owner_env(DiscordStandin(port=port).env, tiny_model, tmp_path))
    try:
        first = await bot.line(unreachable)
        await bot.line(unreachable)  # it tried again
        assert await bot.terminate() == 0
    finally:
        bot.kill()

    assert f"127.0.0.1:{port}" in first and "trying again" in first
    assert "Traceback" not in bot.output, bot.output


async def test_the_bot_connects_once_discord_comes_up(tiny_model, tmp_path):
    """Started while Discord is away, the bot keeps trying and answers commands once the stand-in comes up."""
    standin = DiscordStandin(port=free_port())
    bot = await Bot.start(owner_env(standin.env, tiny_model, tmp_path))
    try:
        await bot.line(unreachable)
        async with standin:
            await standin.wait_for_connection(SLOW)
            reply = await (await standin.slash(standin.alice, "general", "queue")).wait_for(timeout=SLOW)
            assert "no queued or running jobs" in reply.content
            assert await bot.terminate() == 0
    finally:
        bot.kill()
    assert "Traceback" not in bot.output, bot.output


async def test_a_start_says_one_ready_line_and_no_third_party_noise(discord, tiny_model, tmp_path):
    """A normal start prints one summary line (model, device, dtype, servers, jobs) and none of the library notices."""
    bot = await Bot.start(owner_env(discord.env, tiny_model, tmp_path))
    try:
        ready = await bot.line(lambda line: "imagine-bot ready" in line)
        assert await bot.terminate() == 0
    finally:
        bot.kill()

    assert re.search(r"ready: model \S+ on cpu \(float32\), up to 1 job\(s\) per call, 2 server\(s\), 0 job\(s\) recovered$", ready), ready
    assert bot.output.count("imagine-bot ready") == 1
    assert not [line for line in bot.lines if any(noise in line for noise in NOISE)], bot.output
