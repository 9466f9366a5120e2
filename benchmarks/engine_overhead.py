"""How much does the Engine add on top of a bare diffusers call? And does the event loop stay responsive?

Runs the same recipe (4 seeds, 20 steps, 512x512 by default) through the raw pipeline call and through
Engine.submit, alternating, after one warm-up each, and prints every run, the medians, the engine/raw ratio
(goal: <= 1.05) and the event loop's worst lag while the engine runs (goal: < 50 ms).

    python benchmarks/engine_overhead.py                    # the tiny model in a temp dir, on the default device
    python benchmarks/engine_overhead.py --model /models/sd15 --device cuda --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from engine import Engine, EngineSettings, Request  # noqa: E402

PROMPT = "a red fox in the snow, morning light, detailed fur"


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


async def _lag_while(coro, tick: float = 0.005) -> tuple[object, float]:
    """Await coro while a ticker measures how late the event loop wakes it; returns (result, max lag in s)."""
    lags = [0.0]
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(tick)
            lags.append(time.perf_counter() - before - tick)

    task = asyncio.create_task(ticker())
    try:
        return await coro, max(lags)
    finally:
        done.set()
        await task


async def bench(model: str, device: str, size: int | None, steps: int, rounds: int, guidance: float) -> dict:
    from diffusers import AutoPipelineForText2Image
    import torch

    from engine.pipeline import resolve_device, resolve_dtype

    seeds = (1, 2, 3, 4)
    settings = EngineSettings(model=model, device=device)
    engine = Engine(settings)
    await engine.start()
    size = size or engine.defaults.size
    resolved = resolve_device(device)
    raw = AutoPipelineForText2Image.from_pretrained(model, dtype=resolve_dtype(settings.dtype, resolved)).to(resolved)
    raw.set_progress_bar_config(disable=True)
    request = Request("imagine", PROMPT, width=size, height=size, steps=steps, guidance=guidance, seeds=seeds)

    def run_raw() -> float:
        started = time.perf_counter()
        raw(PROMPT, width=size, height=size, num_inference_steps=steps, guidance_scale=guidance,
            num_images_per_prompt=len(seeds), generator=[torch.Generator("cpu").manual_seed(s) for s in seeds])
        _sync(resolved)
        return time.perf_counter() - started

    async def run_engine(n: int) -> tuple[float, float]:
        started = time.perf_counter()
        # on_progress set, so previews are made as in the bot
        _, lag = await _lag_while(engine.submit(f"bench-{n}", request, on_progress=lambda p: None))
        return time.perf_counter() - started, lag

    print(f"device {engine.device}, model {engine.defaults.model}, {size}x{size}, {steps} steps, {len(seeds)} images")
    run_raw()
    await run_engine(-1)  # warm-ups
    raw_times, engine_times, lags = [], [], []
    for n in range(rounds):
        raw_times.append(run_raw())  # the raw call blocks the loop; nothing else runs meanwhile
        engine_time, lag = await run_engine(n)
        engine_times.append(engine_time)
        lags.append(lag)
        print(f"round {n + 1}: raw {raw_times[-1]:.3f}s  engine {engine_time:.3f}s  loop max lag {lag * 1000:.1f} ms")
    await engine.stop()
    ratio = statistics.median(engine_times) / statistics.median(raw_times)
    print(f"median raw {statistics.median(raw_times):.3f}s, median engine {statistics.median(engine_times):.3f}s, "
          f"engine/raw {ratio:.3f} (goal <= 1.05); best-of ratio {min(engine_times) / min(raw_times):.3f} "
          "(less sensitive to other processes on the machine)")
    print(f"event loop max lag during engine runs: {max(lags) * 1000:.1f} ms (goal < 50 ms)")
    return {"ratio": ratio, "max_lag": max(lags)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="hub id or folder (default: write the tiny model to a temp dir)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    parser.add_argument("--size", type=int, help="side in px (default: 512 for the tiny model, else the model's)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=7.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from engine.tiny import write_tiny_pipeline

            model = str(write_tiny_pipeline(Path(tmp) / "tiny-model"))
            args.size = args.size or 512  # the tiny model's native side is 64; benchmark at SD 1.5's
        asyncio.run(bench(model, args.device, args.size, args.steps, args.rounds, args.guidance))


if __name__ == "__main__":
    main()
