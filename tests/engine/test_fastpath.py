"""The opt-in fast path on the tiny model, on CPU: torch.compile with a shape menu, a preview model, a replacement VAE."""

from __future__ import annotations

import io
import logging

import pytest
from PIL import Image, ImageChops, ImageStat

from engine import Engine, EngineSettings, Progress, Request
from engine.tiny import write_tiny_preview_model, write_tiny_vae

SIZE = 64  # the tiny model's native size: the one size on a "1:1" menu


def imagine(width=SIZE, height=SIZE, seeds=(1, 2, 3, 4), steps=3) -> Request:
    return Request("imagine", "a red fox in snow", width=width, height=height, steps=steps, seeds=seeds)


def rgb(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("RGB")


def max_pixel_difference(first: bytes, second: bytes) -> int:
    return max(high for _, high in ImageChops.difference(rgb(first), rgb(second)).getextrema())


async def test_compile_with_a_tiny_menu_works_on_cpu(tiny_model, engine, caplog):
    """With IMAGINE_COMPILE and a one-shape menu, start-up compiles and logs it; a job on the menu (imagine and
    variation) runs compiled with the eager engine's pixels (within 2/255); one off the menu runs uncompiled, and
    nothing compiles after start-up."""
    import torch._dynamo.utils

    caplog.set_level(logging.INFO, logger="engine")
    compiled = Engine(EngineSettings(model=str(tiny_model), device="cpu", preview_every=2, compile=True,
                                     compile_aspects="1:1"))
    await compiled.start()
    try:
        fast = compiled._runner.fastpath
        graphs_after_start = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        assert "compiled unet and vae decoder for 1 size(s) at 1 job(s) per call in" in caplog.text
        assert "fast path: compile on (unet and vae decoder; 64x64 at 1 job(s) per call, warmed up in" in caplog.text

        result = await compiled.submit("on-menu", imagine())
        assert fast.unet.calls == {"compiled": 3} and fast.decoder.calls == {"compiled": 1}
        reference = await engine.submit("eager", imagine())
        assert [max_pixel_difference(a, b) <= 2 for a, b in zip(result.images, reference.images)] == [True] * 4

        variation = Request("variation", "a fox", width=SIZE, height=SIZE, steps=4, seeds=(5, 6, 7, 8),
                            init_image=result.images[0], strength=0.5)
        varied, varied_eager = await compiled.submit("vary", variation), await engine.submit("vary", variation)
        assert fast.unet.calls == {"compiled": 5}  # 4 steps at strength 0.5: the image-to-image pipeline shares it
        assert max_pixel_difference(varied.grid, varied_eager.grid) <= 2

        off_menu = await compiled.submit("off-menu", imagine(width=96))
        assert size_of(off_menu.grid) == (192, 128)
        assert fast.unet.calls == {"compiled": 5, "eager": 3} and fast.decoder.calls["eager"] == 1
        assert "unet: 96x64 is not on the compile menu (IMAGINE_COMPILE_ASPECTS); it runs uncompiled" in caplog.text
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs_after_start
    finally:
        await compiled.stop()


def size_of(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size
