"""How fast does the bot acknowledge /imagine while the engine is busy generating?

Starts the Discord stand-in from tests/ on 127.0.0.1 and the real bot as its own process (`python -m bot`, the
tiny model at 256 px and 20 steps, so each job keeps the engine busy for a while). Once a first job is running,
50 members each send /imagine in one burst, and the stand-in measures, for each, the time from dispatching the
interaction to the bot's first response (Discord's deadline is 3 s). Goals: every acknowledgement under 1 s,
median under 100 ms.

    python benchmarks/ack_latency.py [--burst 50] [--size 256] [--steps 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.tiny import write_tiny_pipeline  # noqa: E402
from tests.discord_standin import DiscordStandin  # noqa: E402


async def main(args: argparse.Namespace) -> int:
    folder = Path(tempfile.mkdtemp(prefix="ack-latency-"))
    model = write_tiny_pipeline(folder / "model")
    async with DiscordStandin() as discord:
        members = [discord.add_member(f"member{n}") for n in range(args.burst)]
        env = os.environ | discord.env | {
            "IMAGINE_MODEL": str(model),
            "IMAGINE_SIZE": str(args.size),
            "IMAGINE_STEPS": str(args.steps),
            "DATA_DIR": str(folder / "data"),
        }
        with (folder / "bot.log").open("wb") as log:
            bot = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", cwd=REPO, env=env, stdout=log, stderr=log)
        try:
            await discord.wait_for_connection(180)
            first = await discord.slash(discord.alice, "general", "imagine", prompt="keep the engine busy")
            await first.wait_for(lambda m: "step" in m.content, 120)

            started = time.perf_counter()
            burst = await asyncio.gather(
                *(discord.slash(m, "general", "imagine", prompt=f"a fox number {n}") for n, m in enumerate(members))
            )
            acks = await asyncio.gather(*(i.acked(timeout=10) for i in burst))
            sent = time.perf_counter() - started
            busy = "step" in first.messages[0].content or any("step" in v.content for v in first.messages[0].history)

            times = sorted(a.elapsed * 1000 for a in acks)
            print(f"engine busy during the burst: {busy}; {len(times)} /imagine sent in {sent * 1000:.0f} ms")
            print(f"acknowledgement: median {statistics.median(times):.1f} ms, "
                  f"p95 {times[int(0.95 * (len(times) - 1))]:.1f} ms, worst {times[-1]:.1f} ms")
            late = [t for t in times if t >= 1000]
            print(f"over 1 s: {len(late)}; over Discord's 3 s: {len([t for t in times if t >= 3000])}")
            return 0 if not late and statistics.median(times) < 100 else 1
        finally:
            bot.terminate()
            await bot.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    sys.exit(asyncio.run(main(parser.parse_args())))
