"""Fixtures shared by every test: the tiny model on disk, the Discord stand-in, and the real bot against it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from engine.tiny import write_tiny_pipeline

pytest_plugins = ["tests.discord_standin.plugin"]

# End-to-end runs use small images and few steps through the same settings a server owner would use.
E2E_ENV = {
    "IMAGINE_DEVICE": "cpu",
    "IMAGINE_SIZE": "64",
    "IMAGINE_STEPS": "4",
    "IMAGINE_PREVIEW_EVERY": "1",
}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly-initialised Stable Diffusion pipeline, written once per test run."""
    return write_tiny_pipeline(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_model_two(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline with other random weights: a second model (IMAGINE_MODELS)."""
    return write_tiny_pipeline(tmp_path_factory.mktemp("tiny-model-two"), seed=1)


@pytest.fixture(scope="session")
def tiny_model_nsfw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline with a safety checker that flags every image."""
    return write_tiny_pipeline(tmp_path_factory.mktemp("tiny-model-nsfw"), safety_checker=True, flag_everything=True)


@pytest.fixture
def bot_env(discord, tiny_model: Path, tmp_path: Path) -> dict[str, str]:
    """The environment a server owner would write in .env, aimed at the stand-in and the tiny model."""
    return discord.env | E2E_ENV | {"IMAGINE_MODEL": str(tiny_model), "DATA_DIR": str(tmp_path / "data")}


@pytest_asyncio.fixture
async def start_bot(discord, bot_env) -> AsyncIterator[Callable[..., Awaitable]]:
    """Start the real bot in this process (``await start_bot(**extra_env)``); stopped at the end of the test."""
    from bot.__main__ import services
    from bot.config import Settings

    stack = contextlib.AsyncExitStack()

    async def start(**extra: str):
        settings = Settings.from_env(bot_env | extra)
        bot = await stack.enter_async_context(services(settings))
        task = asyncio.create_task(bot.start(settings.token))
        stack.push_async_callback(_stop, bot, task)
        await asyncio.wait_for(_ready(bot, task), 60)
        return bot

    async with stack:
        yield start


async def _ready(bot, task: asyncio.Task) -> None:
    waiter = asyncio.create_task(bot.wait_until_ready())
    done, _ = await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:  # start() ended before the bot was ready: show why
        waiter.cancel()
        task.result()
        raise RuntimeError("the bot stopped before it was ready")


async def _stop(bot, task: asyncio.Task) -> None:
    await bot.close()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest_asyncio.fixture
async def bot(start_bot):
    """The real bot, logged in to the stand-in with the tiny model loaded."""
    return await start_bot()
