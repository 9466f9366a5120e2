"""Does a second Ray Serve replica double the jobs per second?

N jobs (distinct seeds, 4 images each) run through the bot's Ray client (bot/ray_backend.py) as the runner would
send them, at most capacity() calls in flight: first on 1 replica, then on 2, in one run on one local Ray cluster of
--cpus CPUs. Each replica is limited to --threads torch threads, so on a 2-core machine like CI's the two replicas
share the cores fairly. Prints jobs/s for each (median over rounds), the ratio (goal: >= 1.6x on 2 cores) and the
per-job latency p50/p95 (from the moment all N jobs are ready until the job's result).

    python benchmarks/scaleout.py                                   # the tiny model on CPU replicas
    python benchmarks/scaleout.py --model stable-diffusion-v1-5/stable-diffusion-v1-5 --gpus 1 --size 512 --steps 25
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from anywhere without installing
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))  # replicas too

import ray  # noqa: E402
from ray import serve  # noqa: E402

from bot.config import RaySettings  # noqa: E402
from bot.ray_backend import RayBackend  # noqa: E402
from engine import EngineSettings, Request  # noqa: E402
from engine.serve import APP, application  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def run_jobs(backend: RayBackend, requests: list[Request], first_id: int) -> tuple[float, list[float]]:
    """All jobs at once, at most capacity() calls in flight (as bot/runner.py does); (seconds, latencies)."""
    slots = asyncio.Semaphore(backend.capacity())
    started = time.perf_counter()
    latencies: list[float] = []

    async def one(n: int, request: Request) -> None:
        async with slots:
            (outcome,) = backend.submit_batch([(first_id + n, request, None)])
            await outcome
        latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(one(n, request) for n, request in enumerate(requests)))
    return time.perf_counter() - started, latencies


async def measure(settings: EngineSettings, args, replicas: int) -> tuple[list[float], list[float]]:
    serve.run(application(settings, replicas=replicas, gpus=args.gpus, torch_threads=args.threads,
                          shutdown_timeout=60), name=APP, route_prefix=None)
    backend = RayBackend(RaySettings(replicas=replicas, gpus=args.gpus), settings)
    await backend.start()
    assert backend.capacity() == replicas, backend.capacity()
    size = args.size or backend.defaults.size
    rates, latencies = [], []
    try:
        warm_up = Request("imagine", "warm-up", width=size, height=size, steps=2, seeds=(1,))
        await run_jobs(backend, [warm_up] * replicas, 10_000_000)  # every replica once: no round pays a first call
        for round_ in range(args.rounds):
            requests = [Request("imagine", f"a red fox in snow, take {n}", width=size, height=size, steps=args.steps,
                                seeds=tuple(range(4 * n, 4 * n + 4))) for n in range(args.jobs)]
            seconds, round_latencies = await run_jobs(backend, requests, first_id=(round_ + 1) * 100_000)
            rates.append(args.jobs / seconds)
            latencies += round_latencies
            print(f"  {replicas} replica(s), round {round_ + 1}: {args.jobs} jobs in {seconds:.2f} s", flush=True)
    finally:
        await backend.stop()
    return rates, latencies


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="hub id or folder; default: the tiny model, written to a temp folder")
    parser.add_argument("--gpus", type=float, default=0, help="GPUs per replica (0: CPU replicas)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per replica")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=128, help="image side in px (0: the model's native size)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from engine.tiny import write_tiny_pipeline

            model = str(write_tiny_pipeline(Path(tmp) / "tiny"))
        settings = EngineSettings(model=model, device="cuda" if args.gpus else "cpu", preview_every=0,
                                  safety_checker=False, max_batch=1)
        ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        try:
            serve.start(proxy_location="Disabled")
            figures = {replicas: await measure(settings, args, replicas) for replicas in (1, 2)}
        finally:
            serve.shutdown()
            ray.shutdown()

    print(f"\n{args.jobs} jobs x {args.rounds} rounds, {args.steps} steps, "
          f"4 images of {args.size or 'native'} px each, "
          f"{'%g GPU' % args.gpus if args.gpus else '1 CPU'} and {args.threads} torch thread(s) per replica, "
          f"{os.cpu_count()} cores here")
    for replicas, (rates, latencies) in figures.items():
        rounds = ", ".join(f"{rate:.2f}" for rate in rates)
        print(f"{replicas} replica(s): {statistics.median(rates):.2f} jobs/s (rounds {rounds}), "
              f"latency p50 {percentile(latencies, 50):.2f} s, p95 {percentile(latencies, 95):.2f} s")
    ratio = statistics.median(figures[2][0]) / statistics.median(figures[1][0])
    print(f"2 replicas / 1 replica: {ratio:.2f}x (goal >= 1.6x)")


if __name__ == "__main__":
    asyncio.run(main())
