"""A tiny bot run as its own process, configured only by DISCORD_* variables, as `python -m bot` is."""

import asyncio
import os

import discord
import discord.gateway
import discord.http
import yarl
from discord import app_commands


class ProcessBot(discord.Client):
    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.none(), guild_ready_timeout=0.1)
        self.tree = app_commands.CommandTree(self)

    async def setup_hook(self) -> None:
        @self.tree.command(description="Draw a picture")
        async def imagine(interaction: discord.Interaction, prompt: str) -> None:
            await interaction.response.send_message(f"{prompt}, from another process")

        guild = discord.Object(int(os.environ["DISCORD_GUILD_ID"]))
        self.tree.copy_global_to(guild=guild)
        await self.tree.sync(guild=guild)


def main() -> None:
    discord.http.Route.BASE = os.environ["DISCORD_API_BASE"]
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(os.environ["DISCORD_GATEWAY_URL"])
    client = ProcessBot()
    asyncio.run(client.start(os.environ["DISCORD_TOKEN"]))


if __name__ == "__main__":
    main()
