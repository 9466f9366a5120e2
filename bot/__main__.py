"""Start the bot: settings -> Discord accepts the token? -> store -> engine -> Discord.

    python -m bot        (or the `imagine-bot` console script)

Discord is asked first whether it takes the token, so a wrong token is one line at once, before a model load that
can take minutes; while Discord can't be reached the bot says so in one line per try and tries again, backing off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator

import aiohttp
import discord

from bot import config
from bot.backend import Backend
from bot.bot import ImagineBot, use_discord_endpoints
from bot.store import MigrationError, SchemaTooNew, Store
from engine import Engine

log = logging.getLogger("bot")

FIRST_RETRY = 1.0  # seconds before the second try to reach Discord; doubled after each failure ...
LAST_RETRY = 60.0  # ... up to this


class DiscordUnusable(Exception):
    """Discord (or whatever DISCORD_API_BASE points at) answered, but not as Discord; the message is one line."""


@contextlib.asynccontextmanager
async def services(settings: config.Settings) -> AsyncIterator[ImagineBot]:
    """Compose everything in order: Discord endpoints, store, backend, then the bot.

    The local engine has loaded its model when start() returns; the Ray backend goes on connecting meanwhile (its
    capacity is 0 until a replica answers), so the bot is on Discord even while the cluster is down."""
    use_discord_endpoints(settings.api_base, settings.gateway_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = await Store.open(settings.database, images_dir=settings.data_dir / "images")
    engine = backend(settings, store)
    try:
        await engine.start()
        async with ImagineBot.create(settings, store, engine) as bot:
            yield bot
    finally:
        await engine.stop()
        await store.close()


def backend(settings: config.Settings, store: Store) -> Backend:
    """The one place that knows which backend runs the jobs (bot/backend.py)."""
    if settings.backend == "ray":
        from bot.ray_backend import RayBackend  # ray is an optional extra: imported only when asked for

        return RayBackend(settings.ray, settings.engine, memory=store)
    return Engine(settings.engine)


async def reach_discord(settings: config.Settings, stopping: asyncio.Event) -> bool:
    """Log in once with the token, trying again with backoff while Discord can't be reached.

    Returns False if `stopping` is set first. Raises discord.LoginFailure at once when Discord refuses the token,
    and DiscordUnusable when something else answers at DISCORD_API_BASE.
    """
    use_discord_endpoints(settings.api_base, settings.gateway_url)
    delay = FIRST_RETRY
    while True:
        http = discord.http.HTTPClient(asyncio.get_running_loop())
        login = asyncio.ensure_future(http.static_login(settings.token))
        halt = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({login, halt}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (login, halt):
                task.cancel()
            error = (await asyncio.gather(login, return_exceptions=True))[0]
            await http.close()
        if stopping.is_set():
            return False
        if not isinstance(error, BaseException):
            return True
        reason = _unreachable(error)
        if reason is None and isinstance(error, discord.HTTPException) and not isinstance(error, discord.LoginFailure):
            raise DiscordUnusable(f"{error.response.url} answered {error.status} {error.response.reason} to a login; "
                                  "is DISCORD_API_BASE right?")
        if reason is None:
            raise error
        log.warning("Can't reach Discord at %s (%s); trying again in %g s.", settings.api_base, reason, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), delay)
            return False
        delay = min(2 * delay, LAST_RETRY)


def _unreachable(error: BaseException) -> str | None:
    """Why Discord can't be reached now (worth another try), or None for an error another try won't fix."""
    if isinstance(error, discord.HTTPException) and (error.status >= 500 or error.status == 429):
        return f"it answered {error.status} {error.response.reason}"
    if isinstance(error, aiohttp.ClientConnectorError):
        if isinstance(error.os_error, socket.gaierror):
            return f"can't look up {error.host}"
        if isinstance(error.os_error, ConnectionRefusedError):
            return f"nothing listens at {error.host}:{error.port}"
        return f"can't connect to {error.host}:{error.port}: {error.os_error.strerror or error.os_error}"
    if isinstance(error, (aiohttp.ClientError, OSError)):
        return str(error) or type(error).__name__
    if isinstance(error, asyncio.TimeoutError):
        return "no answer in time"
    return None


def quiet_third_party() -> None:
    """Silence start-up notices that tell an owner nothing, where they come from; real warnings still show."""
    # discord.py warns on every start that voice needs PyNaCl and davey; this bot never joins a voice channel.
    discord.VoiceClient.warn_nacl = False
    discord.VoiceClient.warn_dave = False
    # transformers notes once per image-processor class that torchvision is missing and its PIL fallback is used,
    # which is exactly what the safety checker wants.
    logging.getLogger("transformers.utils.import_utils").addFilter(
        lambda record: "requires torchvision (not installed); falling back" not in record.getMessage()
    )
    # discord.py's INFO lines (logging in, gateway connected, resumed) and the engine's start-up lines are what the
    # one "imagine-bot ready" line says; their warnings and errors still show.
    logging.getLogger("discord").setLevel(logging.WARNING)
    logging.getLogger("engine").setLevel(logging.WARNING)
    logging.getLogger("ray").setLevel(logging.WARNING)  # Ray's and Serve's own INFO lines on connecting
    # ray.init, called off the main thread on purpose, warns that it leaves SIGTERM alone: the bot's own handler.
    logging.getLogger("ray._private.worker").addFilter(
        lambda record: "SIGTERM handler is not set" not in record.getMessage()
    )


async def run(settings: config.Settings) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    starting = asyncio.current_task()
    bot: ImagineBot | None = None

    def stop() -> None:
        stopping.set()
        if bot is not None:
            loop.create_task(bot.close())
        elif starting is not None:  # still composing (a model loading, a cluster being tried): stop that now
            starting.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    if not await reach_discord(settings, stopping):
        return
    try:
        async with services(settings) as bot:
            starting = None
            if not stopping.is_set():
                await bot.start(settings.token)
    except asyncio.CancelledError:
        if not stopping.is_set() or starting is None:
            raise
        starting.uncancel()


def main() -> None:
    discord.utils.setup_logging(level=logging.INFO)
    quiet_third_party()
    try:
        settings = config.load()
    except config.ConfigError as error:
        sys.exit(f"imagine-bot: {error}")
    try:
        asyncio.run(run(settings))
    except (SchemaTooNew, MigrationError, DiscordUnusable) as error:
        sys.exit(f"imagine-bot: {error}")
    except discord.LoginFailure:
        sys.exit("imagine-bot: Discord refused DISCORD_TOKEN; copy the token again from the Developer Portal (Bot page).")
    except (aiohttp.ClientError, OSError) as error:  # reached at start-up, then lost before the gateway connected
        sys.exit(f"imagine-bot: lost the connection to Discord at {settings.api_base} while starting ({error}).")


if __name__ == "__main__":
    main()
