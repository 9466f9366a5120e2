"""Does the bot leak over a long run? Memory, file descriptors, asyncio tasks and database size over 200+ jobs.

Starts the Discord stand-in from tests/ on 127.0.0.1 and the real bot as its own process (the tiny model at 64 px,
4 steps), so that the figures are the bot's alone (the stand-in keeps every message and attachment, in this
process). Several members work at once in two channels, each waiting for their result before the next job:
/imagine, and the buttons on their earlier results (U1-U4, V1-V4, reroll, Vary on an upscale). At jobs 20, 100
and 200 (and every --every jobs after, for --jobs over 200) it prints the bot's RSS, open file descriptors, threads,
asyncio tasks and database size (the file and its write-ahead log). Goals: RSS growth from job 20 to the last under
5 %, descriptors and tasks flat.

    python benchmarks/soak.py [--jobs 200] [--members 6] [--seed 1]

The bot runs as `python benchmarks/soak.py --as-bot`: `python -m bot` exactly, plus a SIGUSR1 handler that writes
the event loop's task count to $SOAK_TASKS_FILE (asyncio has no outside view of its tasks).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHECKPOINTS = (20, 100, 200)
TIMEOUT = 180  # seconds one job may take under load before the run is called broken


def run_as_bot() -> None:
    """`python -m bot`, plus SIGUSR1 -> the number of asyncio tasks in $SOAK_TASKS_FILE."""
    tasks_file = Path(os.environ["SOAK_TASKS_FILE"])

    def report_tasks(signum, frame) -> None:  # runs on the main thread, which runs the event loop
        try:
            count = len(asyncio.all_tasks())
        except RuntimeError:  # between two turns of the loop
            count = -1
        tasks_file.with_suffix(".tmp").write_text(str(count))
        tasks_file.with_suffix(".tmp").replace(tasks_file)

    signal.signal(signal.SIGUSR1, report_tasks)
    from bot.__main__ import main

    main()


class Probe:
    """What /proc and the bot's SIGUSR1 hook tell about the bot process."""

    def __init__(self, pid: int, tasks_file: Path, data_dir: Path) -> None:
        self.pid = pid
        self.tasks_file = tasks_file
        self.data_dir = data_dir

    async def tasks(self) -> int:
        self.tasks_file.unlink(missing_ok=True)
        os.kill(self.pid, signal.SIGUSR1)
        for _ in range(200):  # the bot answers on its next turn of the event loop
            if self.tasks_file.exists():
                return int(self.tasks_file.read_text())
            await asyncio.sleep(0.01)
        return -1

    def status(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    async def sample(self) -> dict[str, float]:
        database, wal = self.data_dir / "imagine.db", self.data_dir / "imagine.db-wal"
        images = sum(p.stat().st_size for p in (self.data_dir / "images").rglob("*.png"))
        return {
            "rss_mb": self.status("VmRSS") / 1024,
            "fds": len(os.listdir(f"/proc/{self.pid}/fd")),
            "threads": self.status("Threads"),
            "tasks": await self.tasks(),
            "db_kb": database.stat().st_size / 1024,
            "wal_kb": wal.stat().st_size / 1024 if wal.exists() else 0.0,  # SQLite folds it back in at 4 MB
            "images_mb": images / 2**20,
        }


def is_result(message) -> bool:
    names = [a.filename for a in message.attachments]
    return any(n.endswith(("grid.png", "upscale.png")) for n in names) or "❌" in message.content


async def main(args: argparse.Namespace) -> int:
    from engine.tiny import write_tiny_pipeline
    from tests.discord_standin import DiscordStandin

    rng = random.Random(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    model = write_tiny_pipeline(folder / "model")
    later = range(CHECKPOINTS[-1] + args.every, args.jobs + 1, args.every)
    checkpoints = {n for n in (*CHECKPOINTS, *later) if n <= args.jobs} | {args.jobs}
    async with DiscordStandin() as discord:
        members = [discord.add_member(f"member{n}") for n in range(args.members)]
        env = os.environ | discord.env | {
            "IMAGINE_MODEL": str(model),
            "IMAGINE_DEVICE": "cpu",
            "IMAGINE_SIZE": "64",
            "IMAGINE_STEPS": "4",
            "DATA_DIR": str(folder / "data"),
            "SOAK_TASKS_FILE": str(folder / "tasks"),
        }
        with (folder / "bot.log").open("wb") as log:
            bot = await asyncio.create_subprocess_exec(sys.executable, __file__, "--as-bot", cwd=REPO, env=env,
                                                       stdout=log, stderr=log)
        probe = Probe(bot.pid, folder / "tasks", folder / "data")
        done = failed = 0
        samples: dict[int, dict[str, float]] = {}
        started = time.perf_counter()
        try:
            await discord.wait_for_connection(180)
            for channel in ("general", "art"):
                limits = await discord.slash(discord.mod, channel, "limits set", jobs_per_hour=1000, max_queued=10)
                await limits.wait_for(lambda m: m.ephemeral, 30)
            print(f"{'job':>5} {'RSS MB':>8} {'fds':>5} {'threads':>7} {'tasks':>5} {'db KB':>8} {'WAL KB':>8}"
                  f" {'images MB':>9} {'elapsed s':>9}")

            async def member(user, channel: str) -> None:
                nonlocal done, failed
                grids, upscales = [], []
                while done + failed < args.jobs:
                    roll = rng.random()
                    if upscales and roll < 0.07:
                        vary = rng.choice(["Vary (Subtle)", "Vary (Strong)"])
                        run = await discord.click(user, rng.choice(upscales), vary)
                    elif grids and roll < 0.55:
                        button = rng.choice(["U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4", "🔄"])
                        run = await discord.click(user, rng.choice(grids), button)
                    else:
                        run = await discord.slash(user, channel, "imagine", prompt=f"a fox number {done} --seed {done}")
                    message = await run.wait_for(is_result, TIMEOUT)
                    if "❌" in message.content:
                        failed += 1
                    else:
                        done += 1
                        (upscales if message.attachments[0].filename.endswith("upscale.png") else grids).append(message)
                        del grids[:-4], upscales[:-2]  # click recent results, as members do
                    count = done + failed
                    if count in checkpoints and count not in samples:
                        samples[count] = sample = await probe.sample()
                        print(f"{count:>5} {sample['rss_mb']:>8.1f} {sample['fds']:>5} {sample['threads']:>7}"
                              f" {sample['tasks']:>5} {sample['db_kb']:>8.0f} {sample['wal_kb']:>8.0f}"
                              f" {sample['images_mb']:>9.1f}"
                              f" {time.perf_counter() - started:>9.0f}", flush=True)

            await asyncio.gather(*(member(m, ("general", "art")[n % 2]) for n, m in enumerate(members)))
        finally:
            bot.terminate()
            await bot.wait()

    first, last = samples[min(samples)], samples[max(samples)]
    growth = last["rss_mb"] / first["rss_mb"] - 1
    print(f"{done} jobs done, {failed} failed, in {time.perf_counter() - started:.0f} s; bot log: {folder / 'bot.log'}")
    print(f"RSS growth from job {min(samples)} to job {max(samples)}: {100 * growth:+.1f} % (goal: under 5 %); "
          f"fds {first['fds']} -> {last['fds']}, tasks {first['tasks']} -> {last['tasks']}, "
          f"threads {first['threads']} -> {last['threads']}")
    flat = last["fds"] <= first["fds"] + 2 and last["tasks"] <= first["tasks"] + 2
    return 0 if growth < 0.05 and flat and not failed else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--as-bot"]:
        run_as_bot()
        sys.exit()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--members", type=int, default=6)
    parser.add_argument("--every", type=int, default=100, help="sample every this many jobs after job 200")
    parser.add_argument("--seed", type=int, default=1)
    sys.exit(asyncio.run(main(parser.parse_args())))
