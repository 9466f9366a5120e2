"""How many admission decisions (check the user's limits + record the job, via Store.admit) per second the store makes.

    python benchmarks/store.py [--seconds 3]

Each concurrent user is a task that loops on Store.admit against a fresh database file in a temp folder. "realistic"
uses the default limits (10 per hour, 2 queued), so most decisions are refusals after a few admissions, and a
background task claims and finishes jobs as the engine would; "all admitted" uses limits that never refuse, so every
decision inserts a row. With two Store objects (two connections, as two processes would have) admissions contend for
the SQLite write lock; the count of "database is locked" errors must stay 0.
"""

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import aiosqlite

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.errors import UserError  # noqa: E402
from bot.store import Limits, Store  # noqa: E402

NEVER_REFUSE = Limits(jobs_per_hour=1000, max_queued=10**9)


async def run(users: int, stores: int, limits: Limits, seconds: float, engine: bool) -> tuple[float, int, int, int]:
    """Returns (decisions per second, admitted, refused, lock errors)."""
    with tempfile.TemporaryDirectory() as folder:
        opened = [await Store.open(Path(folder) / "imagine.db") for _ in range(stores)]
        counts = {"admitted": 0, "refused": 0, "locked": 0}
        deadline = time.perf_counter() + seconds

        async def user(user_id: int) -> None:
            store = opened[user_id % stores]
            n = 0
            while time.perf_counter() < deadline:
                n += 1
                try:
                    # Each user moves to a new channel now and then, as the hourly limit would stop them otherwise.
                    await store.admit(kind="imagine", user_id=user_id, guild_id=1, channel_id=n // 20,
                                      recipe={"prompt": "a lighthouse at dusk", "steps": 30}, limits=limits)
                    counts["admitted"] += 1
                except UserError:
                    counts["refused"] += 1
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) and "busy" not in str(e):
                        raise
                    counts["locked"] += 1

        async def worker() -> None:
            store = opened[-1]
            while time.perf_counter() < deadline:
                job = await store.claim_next()
                if job is None:
                    await asyncio.sleep(0.001)
                else:
                    await store.finish_job(job.id, images=[], grid=None, result={})

        started = time.perf_counter()
        await asyncio.gather(*(user(u) for u in range(1, users + 1)), *([worker()] if engine else []))
        elapsed = time.perf_counter() - started
        for store in opened:
            await store.close()
    decisions = counts["admitted"] + counts["refused"] + counts["locked"]
    return decisions / elapsed, counts["admitted"], counts["refused"], counts["locked"]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="how long each configuration runs")
    args = parser.parse_args()
    load = ", ".join(f"{n:.2f}" for n in os.getloadavg())
    print(f"SQLite {sqlite3.sqlite_version}, aiosqlite {aiosqlite.__version__}, {args.seconds:g} s per row, "
          f"load average {load} on {os.cpu_count()} CPUs")
    header = ("workload", "stores", "users", "decisions/s", "admitted", "refused", "locked")
    print(f"{header[0]:<14} {header[1]:>6} {header[2]:>6} {header[3]:>12} {header[4]:>9} {header[5]:>9} {header[6]:>7}")
    total_locked = 0
    for name, limits, engine in (("realistic", Limits(), True), ("all admitted", NEVER_REFUSE, False)):
        for stores in (1, 2):
            for users in (1, 10, 100):
                rate, admitted, refused, locked = await run(users, stores, limits, args.seconds, engine)
                total_locked += locked
                print(f"{name:<14} {stores:>6} {users:>6} {rate:>12,.0f} {admitted:>9} {refused:>9} {locked:>7}")
    print(f'"database is locked" errors: {total_locked}')
    sys.exit(1 if total_locked else 0)


if __name__ == "__main__":
    asyncio.run(main())
