"""Pytest fixtures for the Discord stand-in; register with `pytest_plugins = ["tests.discord_standin.plugin"]`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from .server import DiscordStandin


@pytest_asyncio.fixture
async def discord() -> AsyncIterator[DiscordStandin]:
    """A fresh stand-in Discord on a free port, with this process's discord.py pointed at it.

    Fails the test at teardown if the bot called a route the stand-in does not know
    (set `discord.allow_unknown_routes = True` in a test that means to).
    """
    async with DiscordStandin() as standin:
        undo = standin.point_discord_py_here()
        try:
            yield standin
        finally:
            undo()
    if standin.unknown_routes and not standin.allow_unknown_routes:
        calls = ", ".join(f"{r.method} {r.path}" for r in standin.unknown_routes)
        pytest.fail(f"the bot called routes the Discord stand-in does not know: {calls}", pytrace=False)


