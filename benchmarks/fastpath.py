"""The fast path's figures: a grid of 4 eager vs compiled, peak memory, and the ratio to the FLOP bound.

    python benchmarks/fastpath.py                     # the tiny model in a temp dir, on CPU at 512x512 (a smoke test)
    python benchmarks/fastpath.py --model stable-diffusion-v1-5/stable-diffusion-v1-5 --device cuda

For each configuration (eager; IMAGINE_COMPILE; IMAGINE_COMPILE with IMAGINE_CHANNELS_LAST) it starts an Engine
(the compiled ones warm up the 1:1 shape at one job per call only, to keep start-up short), runs one warm-up grid and
--rounds timed grids (4 images, --size px square, --steps steps, the model's guidance, previews on as in the bot),
and prints the median grid time, the start-up time and the peak GPU memory.

Then the FLOP bound: the UNet's FLOPs for one grid, counted with torch.utils.flop_counter.FlopCounterMode on one
real UNet call (batch 8 with classifier-free guidance) times the UNet calls a grid makes, divided by the GPU's
measured matmul peak in the pipeline's dtype. measured / bound is the figure to watch: goal on an H100/H200-class
GPU, a grid within 3x of the bound. (On CPU the figures only show that the script runs.)
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
SEEDS = (1, 2, 3, 4)
CONFIGS = {
    "eager": {},
    "compiled": {"compile": True, "compile_aspects": "1:1"},
    "compiled+channels_last": {"compile": True, "compile_aspects": "1:1", "channels_last": True},
}


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


async def grid_times(model: str, device: str, size: int, steps: int, rounds: int, overrides: dict) -> dict:
    """Start an Engine with `overrides`, time `rounds` grids after one warm-up; returns the figures."""
    import torch

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    engine = Engine(EngineSettings(model=model, device=device, size=size, steps=steps, **overrides))
    started = time.perf_counter()
    await engine.start()
    start_up = time.perf_counter() - started
    try:
        defaults = engine.defaults
        request = Request("imagine", PROMPT, width=size, height=size, steps=steps, guidance=defaults.guidance,
                          seeds=SEEDS)
        await engine.submit("warm-up", request, on_progress=lambda p: None)
        times = []
        for n in range(rounds):
            started = time.perf_counter()
            await engine.submit(f"grid-{n}", request, on_progress=lambda p: None)
            times.append(time.perf_counter() - started)
        fast = engine._runner.fastpath  # the benchmark may look inside: how long the warm-up took, what ran compiled
        figures = {
            "median": statistics.median(times), "best": min(times), "start_up": start_up,
            "warm_up": fast.warm_up_seconds, "guidance": defaults.guidance,
            "compiled_calls": {c.name: dict(c.calls) for c in fast.compiled},
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
        }
    finally:
        await engine.stop()
    return figures


def unet_flops_per_grid(model: str, device: str, size: int, steps: int, guidance: float) -> tuple[float, float, int]:
    """(UNet FLOPs per grid, VAE decode FLOPs per grid, UNet calls per grid), counted on the real model."""
    import torch
    from diffusers import AutoPipelineForText2Image
    from torch.utils.flop_counter import FlopCounterMode

    from engine.pipeline import resolve_dtype

    pipe = AutoPipelineForText2Image.from_pretrained(model, dtype=resolve_dtype("auto", device)).to(device)
    pipe.set_progress_bar_config(disable=True)
    calls: list[tuple[tuple, dict]] = []
    hook = pipe.unet.register_forward_pre_hook(lambda module, args, kwargs: calls.append((args, kwargs)),
                                               with_kwargs=True)
    latents = pipe(PROMPT, width=size, height=size, num_inference_steps=steps, guidance_scale=guidance,
                   num_images_per_prompt=len(SEEDS), output_type="latent",
                   generator=[torch.Generator("cpu").manual_seed(s) for s in SEEDS]).images
    hook.remove()
    args, kwargs = calls[0]
    with torch.no_grad():
        with FlopCounterMode(display=False) as unet_counter:
            pipe.unet(*args, **kwargs)
        with FlopCounterMode(display=False) as vae_counter:
            pipe.vae.decode(latents / pipe.vae.config.scaling_factor)
    flops = unet_counter.get_total_flops() * len(calls), vae_counter.get_total_flops(), len(calls)
    del pipe
    if device == "cuda":
        torch.cuda.empty_cache()
    return flops


def matmul_peak(device: str) -> float:
    """The best FLOP/s of a large square matmul in the pipeline's dtype (float16 on CUDA, float32 elsewhere)."""
    import torch

    from engine.pipeline import resolve_dtype

    n = 8192 if device == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=resolve_dtype("auto", device))
    b = torch.randn(n, n, device=device, dtype=a.dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(5):
        _sync(device)
        started = time.perf_counter()
        for _ in range(10):
            a @ b
        _sync(device)
        best = min(best, (time.perf_counter() - started) / 10)
    return 2 * n**3 / best


async def main_async(args: argparse.Namespace, model: str) -> None:
    import torch

    device = args.device
    if device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(0)}")
    print(f"model {model}, {args.size}x{args.size}, {args.steps} steps, {len(SEEDS)} images per grid, "
          f"{args.rounds} rounds per configuration")
    results = {}
    for name in args.configs:
        results[name] = figures = await grid_times(model, device, args.size, args.steps, args.rounds, CONFIGS[name])
        warm_up = f", compile warm-up {figures['warm_up']:.1f}s" if figures["warm_up"] is not None else ""
        peak = f", peak GPU memory {figures['peak_gib']:.2f} GiB" if figures["peak_gib"] is not None else ""
        calls = f", calls {figures['compiled_calls']}" if figures["compiled_calls"] else ""
        print(f"{name}: grid median {figures['median']:.3f}s (best {figures['best']:.3f}s), start-up "
              f"{figures['start_up']:.1f}s{warm_up}{peak}{calls}")
    if "eager" in results:
        for name in results:
            if name != "eager":
                print(f"{name} vs eager: {results['eager']['median'] / results[name]['median']:.2f}x faster")

    guidance = next(iter(results.values()))["guidance"]
    unet_flops, vae_flops, calls = unet_flops_per_grid(model, device, args.size, args.steps, guidance)
    peak = matmul_peak(device)
    bound = unet_flops / peak
    print(f"UNet: {unet_flops / 1e12:.2f} TFLOP per grid ({calls} calls); VAE decode {vae_flops / 1e12:.2f} TFLOP "
          f"more; matmul peak {peak / 1e12:.1f} TFLOP/s; FLOP bound {bound:.3f}s per grid (UNet only)")
    for name, figures in results.items():
        print(f"{name}: measured / bound = {figures['median'] / bound:.2f} (goal on an H100/H200: <= 3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="hub id or folder (default: write the tiny model to a temp dir)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "mps", "cpu"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from engine.tiny import write_tiny_pipeline

            model = str(write_tiny_pipeline(Path(tmp) / "tiny-model"))
        asyncio.run(main_async(args, model))


if __name__ == "__main__":
    main()
