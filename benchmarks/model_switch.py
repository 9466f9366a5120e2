"""Does preferring a job whose model is loaded finish a queue of mixed-model jobs sooner?

Two members queue jobs at once, one always for model `one`, the other always for `two`, so the fair queue
alternates between the models; one model fits on the device at a time (IMAGINE_MAX_LOADED_MODELS=1). The real
store, runner and engine run the queue to its end twice per round: in fair order (every job a switch) and with the
loaded-model preference (engine/batching.py prefer_loaded: up to MAX_SKIPS jobs of the loaded model before a
passed-over one runs), the modes alternating within each round. Prints, per mode, the seconds to finish all jobs
(median over rounds), the model loads, the longest wait of a job, and the ratio.

    python benchmarks/model_switch.py                                     # two tiny models on CPU
    python benchmarks/model_switch.py --models sd15=stable-diffusion-v1-5/stable-diffusion-v1-5,turbo=stabilityai/sd-turbo \
        --device cuda --size 512 --steps 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from bot.runner import JobRunner  # noqa: E402
from bot.store import Limits, Store  # noqa: E402
from engine import Engine, EngineSettings, batching  # noqa: E402

NEVER_REFUSE = Limits(jobs_per_hour=1000, max_queued=1000)


class Quiet:
    """What the runner tells Discord, dropped (the benchmark times the queue, not Discord), loads counted."""

    def __init__(self) -> None:
        self.loads = 0

    async def queued(self, job, **_) -> None:
        pass

    def progress(self, job, step, total, preview, *, loading=None) -> None:
        self.loads += loading is not None

    async def finished(self, job, shown) -> None:
        pass


async def run_queue(engine: Engine, folder: Path, names: list[str], jobs: int, size: int, steps: int,
                    preferring: bool) -> tuple[float, int, float]:
    """Queue `jobs` jobs alternating between the models (two members), run them all; (seconds, loads, worst wait)."""
    store = await Store.open(folder / f"{time.monotonic_ns()}.db")
    quiet = Quiet()
    runner = JobRunner(store, engine, quiet)
    fair_order = contextlib.nullcontext() if preferring else mock.patch.object(
        batching, "prefer_loaded", lambda queue, loaded, *args, **kwargs: list(queue))
    try:
        with fair_order:
            async with runner.held():  # all queued before the first is claimed
                await runner.start()
                for n in range(jobs):
                    model = names[n % 2]
                    defaults = engine.models[model]
                    await store.admit(kind="imagine", user_id=1 + n % 2, guild_id=1, channel_id=1, limits=NEVER_REFUSE,
                                      recipe={"prompt": f"a lighthouse, number {n}", "negative_prompt": "",
                                              "width": size, "height": size, "steps": steps,
                                              "guidance": defaults.guidance, "seeds": [n, n + 1, n + 2, n + 3],
                                              "aspect": "1:1", "model": model, "loras": []})
                started = time.perf_counter()
            while await store.unfinished_jobs():
                await asyncio.sleep(0.02)
            took = time.perf_counter() - started
        finished = [await store.get_job(n) for n in range(1, jobs + 1)]
        assert all(job.status == "done" for job in finished), [job.error for job in finished]
        worst = max(job.finished_at - job.created_at for job in finished)
        return took, quiet.loads, worst
    finally:
        await runner.stop()
        await store.close()


async def bench(models: str, device: str, size: int, steps: int, jobs: int, rounds: int) -> None:
    engine = Engine(EngineSettings(models=models, device=device, max_loaded_models=1, preview_every=0, max_batch=1))
    await engine.start()
    names = list(engine.models)[:2]
    print(f"device {engine.device}, models {', '.join(names)} (one loaded at a time), {size}x{size}, {steps} steps, "
          f"{jobs} jobs alternating, {rounds} rounds, MAX_SKIPS {batching.MAX_SKIPS}, window {batching.WINDOW}")
    figures = {False: [], True: []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            await run_queue(engine, Path(tmp), names, 2, size, steps, True)  # warm-up: both models loaded once
            for r in range(rounds):
                for preferring in ((False, True) if r % 2 == 0 else (True, False)):
                    figures[preferring].append(await run_queue(engine, Path(tmp), names, jobs, size, steps,
                                                               preferring))
                print(f"round {r + 1}: " + "  ".join(
                    f"{'preferring' if p else 'fair order'} {figures[p][-1][0]:.2f} s, {figures[p][-1][1]} loads"
                    for p in (False, True)))
    finally:
        await engine.stop()

    print(f"\n{'mode':>11} {'seconds':>8} {'loads':>6} {'longest wait':>13}")
    medians = {}
    for preferring in (False, True):
        seconds = statistics.median(f[0] for f in figures[preferring])
        medians[preferring] = seconds
        loads = statistics.median(f[1] for f in figures[preferring])
        worst = statistics.median(f[2] for f in figures[preferring])
        print(f"{'preferring' if preferring else 'fair order':>11} {seconds:>8.2f} {loads:>6.0f} {worst:>12.2f}s")
    print(f"preferring the loaded model takes {medians[True] / medians[False]:.2f}x the time of fair order "
          f"({medians[False] / medians[True]:.2f}x faster)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="IMAGINE_MODELS, two name=source pairs (default: two tiny models)")
    parser.add_argument("--device", default="cpu", choices=("auto", "cuda", "mps", "cpu"))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = args.models
        if models is None:
            from engine.tiny import write_tiny_pipeline

            one = write_tiny_pipeline(Path(tmp) / "one")
            two = write_tiny_pipeline(Path(tmp) / "two", seed=1)
            models = f"one={one},two={two}"
        asyncio.run(bench(models, args.device, args.size, args.steps, args.jobs, args.rounds))


if __name__ == "__main__":
    main()
