"""The bot: a commands.Bot that loads one Cog per feature and owns the job runner."""

from __future__ import annotations

import hashlib
import json
import logging

import discord
import yarl
from discord import app_commands
from discord.ext import commands, tasks

from bot.backend import Backend
from bot.config import Settings
from bot.messages import JobMessages
from bot.replies import report_error
from bot.runner import JobRunner
from bot.store import Store

log = logging.getLogger(__name__)

EXTENSIONS = (
    "bot.cogs.imagine",
    "bot.cogs.buttons",
    "bot.cogs.queue",
    "bot.cogs.limits",
    "bot.cogs.show",
    "bot.cogs.delete",
    "bot.cogs.settings",
)

def use_discord_endpoints(api_base: str, gateway_url: str) -> None:
    """Send all REST, webhook and gateway traffic to the given Discord (a proxy, or a test stand-in)."""
    discord.http.Route.BASE = api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


class ImagineTree(app_commands.CommandTree):
    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        await report_error(interaction, error)


class ImagineBot(commands.Bot):
    """The bot on one gateway connection; `ImagineBot.create` gives the sharded one when DISCORD_SHARDS is set."""

    @staticmethod
    def create(settings: Settings, store: Store, engine: Backend) -> ImagineBot:
        """The bot the settings ask for: unsharded by default, on AutoShardedBot with DISCORD_SHARDS."""
        cls = ImagineBot if settings.shards is None else ShardedImagineBot
        return cls(settings, store, engine)

    def __init__(self, settings: Settings, store: Store, engine: Backend) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            tree_cls=ImagineTree,
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),  # each message says who it may ping (bot/replies.py)
            shard_count=settings.shards if isinstance(settings.shards, int) else None,  # None: ask Discord
        )
        self.settings = settings
        self.store = store
        self.engine = engine
        self.messages = JobMessages(self, settings.progress_interval)
        self.runner = JobRunner(store, engine, self.messages)
        self._announced = False

    async def setup_hook(self) -> None:
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        await self.sync_commands()
        await self.runner.start()
        self.prune_images.start()

    async def close(self) -> None:
        self.prune_images.cancel()
        await self.runner.stop()
        await super().close()

    @tasks.loop(hours=6)
    async def prune_images(self) -> None:
        """Delete images older than IMAGE_RETENTION_DAYS; their buttons then say so instead of failing."""
        pruned = await self.store.prune_images(self.settings.image_retention_days)
        if pruned:
            log.info("Pruned the images of %d job(s) older than %g days", pruned, self.settings.image_retention_days)

    async def on_ready(self) -> None:
        """The one start-up line an owner needs (on_ready comes again after each re-IDENTIFY: said once)."""
        if self._announced:
            return
        self._announced = True
        engine = self.engine
        shards = f" on {self.shard_count} shard(s)" if isinstance(self, commands.AutoShardedBot) else ""
        if engine.capacity() == 0:  # Ray replicas not reached yet: say what is known
            workers = "waiting for the image workers" + (
                f" (last seen: model {engine.defaults.model} on {engine.device})" if engine.defaults else
                " (no model known yet: new prompts are refused until they answer)")
        else:
            workers = (f"model {engine.defaults.model} on {engine.device} ({engine.dtype}), up to {engine.max_batch} "
                       f"job(s) per call" + (f", fast path: {engine.fast_path}" if engine.fast_path else ""))
        log.info("imagine-bot ready: %s, %d server(s)%s, %d job(s) recovered", workers, len(self.guilds), shards,
                 self.runner.recovered)

    async def sync_commands(self) -> None:
        """Sync slash commands when they changed since the last sync (Discord rate-limits syncing).

        With DISCORD_SYNC_GUILD set they go to that one server and appear at once (handy while developing);
        otherwise they are global.
        """
        guild = discord.Object(self.settings.sync_guild) if self.settings.sync_guild else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        payload = [command.to_dict(self.tree) for command in self.tree.get_commands(guild=guild)]
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        key = f"commands:{guild.id if guild else 'global'}:{self.application_id}"
        if await self.store.get_meta(key) == digest:
            return
        synced = await self.tree.sync(guild=guild)
        await self.store.set_meta(key, digest)
        log.info("Synced %d slash command(s) %s", len(synced), f"to server {guild.id}" if guild else "globally")


class ShardedImagineBot(ImagineBot, commands.AutoShardedBot):
    """The same bot over one gateway connection per shard, for bots in more than about 1,000 servers.

    discord.py launches the shards one after another, 5 s apart (Discord's IDENTIFY limit), and says on_ready once
    all of them are ready.
    """
