#!/usr/bin/env bash
# For someone with a GPU: does the engine run on CUDA, how fast, and what does it add over raw diffusers?
#
#   bash benchmarks/gpu_check.sh                      # the tiny model (written to a temp dir), no download
#   IMAGINE_MODEL=stable-diffusion-v1-5/stable-diffusion-v1-5 bash benchmarks/gpu_check.sh
#
# Prints the device name, the load time, one real job's timings (imagine, variation, upscale, zoom, pan), the
# engine-overhead benchmark (engine/raw ratio, event-loop lag), cross-user batching (images/s and peak
# memory at 1, 2 and 4 jobs per call), and the fast path (benchmarks/fastpath.py): a grid of 4 at 512x512
# and 25 steps eager vs IMAGINE_COMPILE (and with channels_last), peak GPU memory, and the grid time over
# the FLOP bound (UNet FLOPs / measured matmul peak; goal on an H100/H200: <= 3), and model switching with and
# without the loaded-model preference (benchmarks/model_switch.py). Those figures mean
# something with an SD 1.5-class IMAGINE_MODEL; with the tiny model they only show that the script runs.
# Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
export GPU_CHECK_DEVICE="${GPU_CHECK_DEVICE:-cuda}"   # GPU_CHECK_DEVICE=cpu smoke-tests this script without a GPU

"$PYTHON" - <<'EOF'
import os, torch
if os.environ["GPU_CHECK_DEVICE"] == "cpu":
    print(f"no GPU check: running on cpu, torch {torch.__version__}")
elif not torch.cuda.is_available():
    raise SystemExit(f"no CUDA GPU visible to torch {torch.__version__} (cuda build: {torch.version.cuda})")
else:
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
if [[ -z "${IMAGINE_MODEL:-}" ]]; then
    "$PYTHON" -m engine.tiny "$WORK/tiny-model" >/dev/null
    export IMAGINE_MODEL="$WORK/tiny-model"
    SIZE_ARGS=(--size 512)   # the tiny model's native side is 64; benchmark at SD 1.5's
else
    SIZE_ARGS=()             # the model's native size
fi
echo "model: $IMAGINE_MODEL"

"$PYTHON" - <<'EOF'
import asyncio, os, time
from engine import Engine, EngineSettings, Request

async def main():
    device = os.environ["GPU_CHECK_DEVICE"]
    settings = EngineSettings.from_env({**os.environ, "IMAGINE_DEVICE": device})
    engine = Engine(settings)
    started = time.perf_counter()
    await engine.start()
    print(f"loaded in {time.perf_counter() - started:.1f}s on {engine.device}; defaults {engine.defaults}")
    d = engine.defaults
    size = d.size if d.size >= 256 else 512
    request = Request("imagine", "a red fox in snow, detailed fur", width=size, height=size, steps=d.steps,
                      guidance=d.guidance, seeds=(1, 2, 3, 4))
    try:
        await engine.submit("warm-up", request)
        result = await engine.submit("imagine", request)
        print(f"imagine: 4 x {result.width}x{result.height}, {d.steps} steps: {result.elapsed:.2f}s")
        variation = await engine.submit("variation", Request("variation", request.prompt, steps=d.steps,
                                        guidance=d.guidance, seeds=(5, 6, 7, 8), init_image=result.images[0],
                                        strength=0.7))
        print(f"variation (strong): 4 x {variation.width}x{variation.height}: {variation.elapsed:.2f}s")
        upscaled = await engine.submit("upscale", Request("upscale", request.prompt, steps=d.steps,
                                       guidance=d.guidance, seeds=(9,), init_image=result.images[0]))
        print(f"upscale: 1 x {upscaled.width}x{upscaled.height}: {upscaled.elapsed:.2f}s")
        zoomed = await engine.submit("zoom", Request("zoom", request.prompt, width=size, height=size, steps=d.steps,
                                     guidance=d.guidance, seeds=(10, 11, 12, 13), init_image=result.images[0],
                                     zoom=2.0))
        print(f"zoom out 2x (outpaint): 4 x {zoomed.width}x{zoomed.height}: {zoomed.elapsed:.2f}s")
        panned = await engine.submit("pan", Request("pan", request.prompt, width=size * 3 // 2 // 8 * 8,
                                     height=size, steps=d.steps, guidance=d.guidance, seeds=(14, 15, 16, 17),
                                     init_image=result.images[0], pan="right"))
        print(f"pan right (outpaint): 4 x {panned.width}x{panned.height}: {panned.elapsed:.2f}s")
        import torch
        if device == "cuda":
            print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    finally:
        await engine.stop()

asyncio.run(main())
EOF

"$PYTHON" benchmarks/engine_overhead.py --model "$IMAGINE_MODEL" --device "$GPU_CHECK_DEVICE" "${SIZE_ARGS[@]}" --rounds "${ROUNDS:-5}"

# Cross-user batching: 8 jobs of 4 images, alone vs 2 and 4 jobs per call, alternating (benchmarks/batching.py).
echo "batching: images/s at 1, 2 and 4 jobs per call"
"$PYTHON" benchmarks/batching.py --model "$IMAGINE_MODEL" --device "$GPU_CHECK_DEVICE" "${SIZE_ARGS[@]}" \
    --steps 25 --jobs 8 --batches 2,4 --rounds "${ROUNDS:-3}"

# The fast path: eager vs compiled grid time at 512x512, 25 steps; peak memory; measured / FLOP bound.
# (On CPU a smoke test only: a small grid, few steps, one round, so it ends in minutes.)
if [[ "$GPU_CHECK_DEVICE" == cpu ]]; then
    FASTPATH_ARGS=(--size 128 --steps 4 --rounds 1)
else
    FASTPATH_ARGS=(--size 512 --steps 25 --rounds "${ROUNDS:-5}")
fi
"$PYTHON" benchmarks/fastpath.py --model "$IMAGINE_MODEL" --device "$GPU_CHECK_DEVICE" "${FASTPATH_ARGS[@]}"

# Several models: queued jobs alternating between two models, one loaded at a time, with and without the
# loaded-model preference (benchmarks/model_switch.py). Tiny models unless IMAGINE_MODELS names two real ones.
MODEL_SWITCH_ARGS=(--device "$GPU_CHECK_DEVICE" --rounds "${ROUNDS:-3}")
if [[ -n "${IMAGINE_MODELS:-}" ]]; then
    MODEL_SWITCH_ARGS+=(--models "$IMAGINE_MODELS" --size 512 --steps 20)
fi
"$PYTHON" benchmarks/model_switch.py "${MODEL_SWITCH_ARGS[@]}"
