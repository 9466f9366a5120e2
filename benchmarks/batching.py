"""Does batching jobs of different members into one pipeline call give more images per second?

N jobs with distinct prompts and seeds, 4 images each, all queued at once, run through the Engine: alone one after
another, and batched 2, 3 and 4 jobs per call (Engine.submit_batch), the modes alternating within each round. Prints,
per mode, images/s (median over rounds), the ratio to alone, per-job latency p50/p95 (from the moment all N jobs are
queued until the job's result, so queueing is included), the largest solo-vs-batched pixel difference, and on
CUDA the peak GPU memory of each mode.

    python benchmarks/batching.py                                      # the tiny model on CPU
    python benchmarks/batching.py --model stable-diffusion-v1-5/stable-diffusion-v1-5 --device cuda
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from engine import Engine, EngineSettings, Request  # noqa: E402

SUBJECTS = ["a red fox in snow", "a lighthouse at dusk", "a bowl of ramen", "an owl on a branch", "a desert city",
            "a koi pond", "a steam train", "a glass teapot", "a mountain lake", "a paper crane", "a neon street",
            "a sunflower field"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def pixels(png: bytes):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def max_difference(first, second) -> int:
    return max(int(abs(pixels(a) - pixels(b)).max()) for a, b in zip(first.images, second.images))


async def run_mode(engine: Engine, requests: list[Request], batch: int, tag: str) -> tuple[float, list[float], list]:
    """All requests queued at once, `batch` per call; returns (seconds, per-job latencies, results in order)."""
    started = time.perf_counter()
    latencies: list[float] = [0.0] * len(requests)
    results: list = [None] * len(requests)

    async def settle(n: int, outcome) -> None:
        results[n] = await outcome
        latencies[n] = time.perf_counter() - started

    waits = []
    for first in range(0, len(requests), batch):
        chunk = list(enumerate(requests))[first:first + batch]
        if batch == 1:
            outcomes = [engine.submit(f"{tag}-{first}", chunk[0][1])]
        else:
            outcomes = engine.submit_batch([(f"{tag}-{n}", request, None) for n, request in chunk])
        waits += [settle(n, outcome) for (n, _), outcome in zip(chunk, outcomes)]
    await asyncio.gather(*waits)
    return time.perf_counter() - started, latencies, results


def peak_memory(reset: bool = False) -> float:
    """Peak CUDA memory allocated since the last reset, in GiB (0 without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return 0.0
    peak = torch.cuda.max_memory_allocated() / 2**30
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return peak


async def bench(model: str, device: str, size: int | None, steps: int, jobs: int, rounds: int,
                batches: tuple[int, ...]) -> None:
    engine = Engine(EngineSettings(model=model, device=device, max_batch=max(batches), preview_every=0))
    await engine.start()
    d = engine.defaults
    size = size or d.size
    requests = [Request("imagine", f"{SUBJECTS[n % len(SUBJECTS)]}, detailed", width=size, height=size, steps=steps,
                        guidance=d.guidance, seeds=tuple(range(10 * n, 10 * n + 4))) for n in range(jobs)]
    print(f"device {engine.device}, model {d.model}, {size}x{size}, {steps} steps, guidance {d.guidance:g}, "
          f"{jobs} jobs x 4 images per mode, {rounds} rounds")
    try:
        for batch in batches:  # warm-up: one call of each batch size
            await run_mode(engine, requests[:batch], batch, f"warm{batch}")
        seconds = {batch: [] for batch in batches}
        latencies = {batch: [] for batch in batches}
        difference = {batch: 0 for batch in batches}
        memory = {batch: 0.0 for batch in batches}
        for r in range(rounds):
            order = batches if r % 2 == 0 else batches[::-1]  # alternate, so drift hits every mode alike
            outputs = {}
            for batch in order:
                peak_memory(reset=True)
                took, waited, outputs[batch] = await run_mode(engine, requests, batch, f"r{r}b{batch}")
                memory[batch] = max(memory[batch], peak_memory())
                seconds[batch].append(took)
                latencies[batch] += waited
            for batch in batches[1:]:
                difference[batch] = max(difference[batch], *(max_difference(a, b)
                                                             for a, b in zip(outputs[1], outputs[batch])))
            print(f"round {r + 1}: " + "  ".join(f"x{b} {jobs * 4 / seconds[b][-1]:.2f} img/s" for b in batches))
    finally:
        await engine.stop()

    alone = jobs * 4 / statistics.median(seconds[1])
    print(f"\n{'jobs/call':>9} {'images/s':>9} {'vs alone':>9} {'latency p50':>12} {'p95':>8} {'max px diff':>12}"
          f" {'peak GPU GiB':>13}")
    for batch in batches:
        rate = jobs * 4 / statistics.median(seconds[batch])
        diff = "-" if batch == 1 else f"{difference[batch]}/255"
        print(f"{batch:>9} {rate:>9.3f} {rate / alone:>8.3f}x {percentile(latencies[batch], 50):>11.2f}s "
              f"{percentile(latencies[batch], 95):>7.2f}s {diff:>12} {memory[batch]:>13.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="hub id or folder (default: write the tiny model to a temp dir)")
    parser.add_argument("--device", default="cpu", choices=("auto", "cuda", "mps", "cpu"))
    parser.add_argument("--size", type=int, help="side in px (default: 256 for the tiny model, else the model's)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=12, help="jobs per mode and round (12 divides by 2, 3 and 4)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", default="1,2,3,4", help="jobs per call to compare; 1 (alone) always runs")
    args = parser.parse_args()
    batches = tuple(sorted({1, *(int(b) for b in args.batches.split(","))}))
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from engine.tiny import write_tiny_pipeline

            model = str(write_tiny_pipeline(Path(tmp) / "tiny-model"))
            args.size = args.size or 256  # the tiny model's native side is 64
        asyncio.run(bench(model, args.device, args.size, args.steps, args.jobs, args.rounds, batches))


if __name__ == "__main__":
    main()
