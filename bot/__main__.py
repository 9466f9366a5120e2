"""Start the bot: settings -> store -> engine -> Discord.

    python -m bot        (or the `imagine-bot` console script)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator

import discord

from bot import config
from bot.bot import ImagineBot, use_discord_endpoints
from bot.store import MigrationError, SchemaTooNew, Store
from engine import Engine

log = logging.getLogger("bot")


@contextlib.asynccontextmanager
async def services(settings: config.Settings) -> AsyncIterator[ImagineBot]:
    """Compose everything in order: Discord endpoints, store, engine (model loaded), then the bot."""
    use_discord_endpoints(settings.api_base, settings.gateway_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = await Store.open(settings.database, images_dir=settings.data_dir / "images")
    engine = Engine(settings.engine)
    try:
        await engine.start()
        async with ImagineBot(settings, store, engine) as bot:
            yield bot
    finally:
        await engine.stop()
        await store.close()


async def run(settings: config.Settings) -> None:
    async with services(settings) as bot:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, lambda: asyncio.create_task(bot.close()))
        await bot.start(settings.token)


def main() -> None:
    discord.utils.setup_logging(level=logging.INFO)
    try:
        settings = config.load()
    except config.ConfigError as error:
        sys.exit(f"imagine-bot: {error}")
    try:
        asyncio.run(run(settings))
    except (SchemaTooNew, MigrationError) as error:
        sys.exit(f"imagine-bot: {error}")
    except discord.LoginFailure:
        sys.exit("imagine-bot: Discord refused DISCORD_TOKEN; copy the token again from the Developer Portal (Bot page).")


if __name__ == "__main__":
    main()
