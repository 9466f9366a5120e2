"""Make images from the command line with the same engine the bot uses.

    python -m engine "a red fox in snow" --out fox.png
    python -m engine "a red fox in snow" --ar 16:9 --grid --seed 42 --out foxes.png

Defaults come from IMAGINE_* settings in the environment and in .env (the bot's settings file).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import random
import sys
from pathlib import Path

from engine.engine import Engine
from engine.jobs import JobCancelled, JobFailed, Request, size_for_aspect
from engine.settings import EngineSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Make an image from a prompt.")
    parser.add_argument("prompt")
    parser.add_argument("--out", type=Path, default=Path("imagine.png"), help="PNG to write (default imagine.png)")
    parser.add_argument("--negative", default="", help="negative prompt: what the image should not show")
    parser.add_argument("--ar", default="1:1", help="aspect ratio, e.g. 16:9 or 2:3 (default 1:1)")
    parser.add_argument("--size", type=int, help="native side in px (default: the model's, or IMAGINE_SIZE)")
    parser.add_argument("--seed", type=int, help="seed of the first image (default: random)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the model's, or IMAGINE_STEPS)")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the model's)")
    parser.add_argument("--grid", action="store_true", help="make 4 images: a 2x2 grid in --out, singles beside it")
    parser.add_argument("--model", help="hub id or local folder (default: IMAGINE_MODELS' first, or IMAGINE_MODEL)")
    parser.add_argument("--device", choices=("auto", "cuda", "mps", "cpu"), help="default IMAGINE_DEVICE or auto")
    parser.add_argument("--dtype", choices=("auto", "float16", "bfloat16", "float32"), help="default auto")
    parser.add_argument("--no-safety-checker", action="store_true", help="do not run the model's safety checker")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        from dotenv import dotenv_values

        env = {**dotenv_values(".env"), **os.environ}
    except ImportError:
        env = dict(os.environ)
    try:
        settings = EngineSettings.from_env(env)
        overrides = {"progress_bar": True, "preview_every": 0}
        for name in ("model", "device", "dtype", "size", "steps", "guidance"):
            if getattr(args, name) is not None:
                overrides[name] = getattr(args, name)
        if args.model is not None:
            overrides["models"] = None  # --model is the one model, whatever IMAGINE_MODELS lists
        if args.no_safety_checker:
            overrides["safety_checker"] = False
        settings = dataclasses.replace(settings, **overrides)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return asyncio.run(_make(settings, args))


async def _make(settings: EngineSettings, args: argparse.Namespace) -> int:
    engine = Engine(settings)
    await engine.start()
    try:
        defaults = engine.defaults
        first = args.seed if args.seed is not None else random.randrange(2**32)
        count = 4 if args.grid else 1
        try:
            width, height = size_for_aspect(defaults.size, args.ar)
            request = Request(
                kind="imagine", prompt=args.prompt, negative_prompt=args.negative, width=width, height=height,
                steps=defaults.steps, guidance=defaults.guidance, seeds=tuple(first + n for n in range(count)),
            )
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        try:
            result = await engine.submit("cli", request)
        except (JobFailed, JobCancelled) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    finally:
        await engine.stop()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    if result.grid is not None:
        args.out.write_bytes(result.grid)
        written = [args.out]
        for n, png in enumerate(result.images, start=1):
            single = args.out.with_name(f"{args.out.stem}-{n}{args.out.suffix}")
            single.write_bytes(png)
            written.append(single)
    else:
        args.out.write_bytes(result.images[0])
        written = [args.out]
    for path, flagged in zip(written[-len(result.images):], result.nsfw):
        if flagged:
            print(f"note: the safety checker flagged {path}", file=sys.stderr)
    if result.prompt_truncated:
        print("note: the prompt was longer than the text encoder reads and was cut", file=sys.stderr)
    print(f"wrote {', '.join(map(str, written))} ({result.width}x{result.height}, seeds "
          f"{', '.join(map(str, result.seeds))}, {result.elapsed:.1f}s on {engine.device})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
