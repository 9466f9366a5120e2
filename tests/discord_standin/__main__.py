"""Run the stand-in alone, for trying a bot by hand: `python -m tests.discord_standin`."""

import asyncio

from .server import DiscordStandin


async def main() -> None:
    async with DiscordStandin() as standin:
        for key, value in standin.env.items():
            print(f"{key}={value}")
        print("# Ctrl-C to stop", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
