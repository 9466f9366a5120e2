"""The opt-in fast path on the tiny model on CPU: torch.compile with a shape menu, preview model, replacement VAE."""

from __future__ import annotations

import io
import logging

import pytest
from PIL import Image, ImageChops, ImageStat

from engine import Engine, EngineSettings, Progress, Request
from engine.tiny import write_tiny_preview_model, write_tiny_vae

SIZE = 64  # the tiny model's native size: the one size on a "1:1" menu


def imagine(width=SIZE, height=SIZE, seeds=(1, 2, 3, 4), steps=3, guidance=7.0) -> Request:
    return Request("imagine", "a red fox in snow", width=width, height=height, steps=steps, seeds=seeds,
                   guidance=guidance)


def rgb(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("RGB")


def max_pixel_difference(first: bytes, second: bytes) -> int:
    return max(high for _, high in ImageChops.difference(rgb(first), rgb(second)).getextrema())


async def test_compile_with_a_tiny_menu_works_on_cpu(tiny_model, engine, caplog):
    """A one-shape compile menu: its jobs run compiled with eager's pixels, others uncompiled, nothing recompiles."""
    import torch._dynamo.utils

    caplog.set_level(logging.INFO, logger="engine")
    compiled = Engine(EngineSettings(model=str(tiny_model), device="cpu", preview_every=2, compile=True,
                                     compile_aspects="1:1", channels_last=True))
    await compiled.start()
    try:
        fast = compiled._runner.fastpath
        graphs_after_start = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        assert "compiled unet and vae decoder for 1 size(s) at 1 job(s) per call in" in caplog.text
        assert "fast path: compile on (unet and vae decoder; 64x64 at 1 job(s) per call, warmed up in" in caplog.text
        assert "channels_last on" in caplog.text

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

        single = await compiled.submit("one image, no guidance", imagine(seeds=(1,), guidance=0.0))
        assert len(single.images) == 1 and fast.unet.calls == {"compiled": 5, "eager": 6}
        assert "unet: 64x64 at batch 1 is not covered by the warmed-up code; it runs uncompiled" in caplog.text
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs_after_start
    finally:
        await compiled.stop()


def size_of(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


async def test_previews_come_from_the_preview_model(tiny_model, tmp_path, caplog):
    """With IMAGINE_PREVIEW_MODEL, previews are that autoencoder's (all red here), and the job still finishes."""
    caplog.set_level(logging.INFO, logger="engine")
    taesd = write_tiny_preview_model(tmp_path / "taesd", colour=(255, 0, 0))
    engine = Engine(EngineSettings(model=str(tiny_model), device="cpu", preview_every=1, preview_model=str(taesd)))
    await engine.start()
    try:
        seen: list[Progress] = []
        result = await engine.submit("job", imagine(), seen.append)
        fast_path = engine.fast_path  # what the bot's ready line says of the opt-in settings
    finally:
        await engine.stop()
    assert f"previews: {taesd}" in caplog.text
    assert fast_path.startswith("compile off, channels_last off") and fast_path.endswith(f"previews: {taesd}")
    previews = [rgb(p.preview) for p in seen if p.preview is not None]
    assert len(previews) == 2 and {p.size for p in previews} == {(256, 256)}
    for preview in previews:
        red, green, blue = ImageStat.Stat(preview).mean
        assert red > 245 and green < 10 and blue < 10
    assert len(result.images) == 4
    red, green, blue = ImageStat.Stat(rgb(result.grid)).mean
    assert not (red > 245 and green < 10 and blue < 10)


async def test_vae_model_replaces_the_models_vae(tiny_model, tmp_path, engine):
    """With IMAGINE_VAE_MODEL, that VAE decodes the images: other pixels than the model's own VAE, the same each run."""
    vae = write_tiny_vae(tmp_path / "vae")
    replaced = Engine(EngineSettings(model=str(tiny_model), device="cpu", vae_model=str(vae)))
    await replaced.start()
    try:
        first, again = await replaced.submit("a", imagine()), await replaced.submit("b", imagine())
    finally:
        await replaced.stop()
    own = await engine.submit("own", imagine())
    assert max_pixel_difference(first.grid, again.grid) == 0
    assert max_pixel_difference(first.grid, own.grid) > 10


@pytest.mark.parametrize("setting", ["preview_model", "vae_model"])
async def test_missing_fast_path_model_fails_start_with_a_readable_message(tiny_model, tmp_path, setting):
    """A preview model or replacement VAE that is not there stops start() with a sentence naming the setting."""
    engine = Engine(EngineSettings(model=str(tiny_model), device="cpu", **{setting: str(tmp_path / "missing")}))
    with pytest.raises(RuntimeError, match=f"could not load IMAGINE_{setting.upper()}=.*a local folder of"):
        await engine.start()
