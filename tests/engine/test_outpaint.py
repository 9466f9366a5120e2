"""Zoom Out and Pan on the tiny model: canvas sizes, the source's pixels kept where outpaint_box puts it, cancel."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine import Engine, EngineSettings, JobCancelled, Progress, Request
from engine.images import read_parameters
from engine.jobs import outpaint_box
from engine.tiny import write_tiny_pipeline

SIZE = 128
# The paste-back feathers the source into the painted border across the mask's overlap (one latent cell, 8 px, at
# this size) plus up to one more cell where the overlap is rounded onto the latent grid: within SEAM px of an edge
# of the source's box that borders new area, the pixels are a blend. Everywhere else inside the box they are the
# source's own, to the 8-bit rounding of that blend (TOLERANCE levels).
SEAM = 16
TOLERANCE = 1


def rgb(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


@pytest.fixture
async def source(engine) -> bytes:
    """A 128x128 picture made by the tiny model (what a member would have upscaled from its grid)."""
    result = await engine.submit("source", Request("imagine", "a lighthouse", width=SIZE, height=SIZE, steps=2,
                                                   seeds=(5,)))
    return result.images[0]


def outpaint(kind: str, source: bytes, canvas: tuple[int, int], steps: int = 3, **how) -> Request:
    return Request(kind, "a lighthouse on a cliff", width=canvas[0], height=canvas[1], steps=steps,
                   seeds=(1, 2, 3, 4), init_image=source, **how)


def assert_source_kept(result, source: bytes, kind: str, canvas: tuple[int, int], seam_sides: str, **how) -> None:
    """Every image holds the (Lanczos-scaled) source in its box, the seam band on `seam_sides` (of "ltrb") excluded,
    and the four candidates differ from each other outside the box (one per seed)."""
    left, top, width, height = outpaint_box(kind, (SIZE, SIZE), canvas, **how)
    scaled = Image.open(io.BytesIO(source)).convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    expected = np.asarray(scaled, dtype=np.int16)
    x0, y0 = (SEAM if "l" in seam_sides else 0), (SEAM if "t" in seam_sides else 0)
    x1, y1 = width - (SEAM if "r" in seam_sides else 0), height - (SEAM if "b" in seam_sides else 0)
    images = [rgb(png) for png in result.images]
    for image in images:
        kept = image[top:top + height, left:left + width]
        assert np.abs(kept - expected)[y0:y1, x0:x1].max() <= TOLERANCE
    outside = np.ones(canvas[::-1], dtype=bool)
    outside[top:top + height, left:left + width] = False
    assert len({image[outside].tobytes() for image in images}) == 4


@pytest.mark.parametrize("zoom", [2.0, 1.5])
async def test_zoom_out_paints_around_the_scaled_source(engine, source, zoom):
    """Zoom Out k: 4 images and a grid at the canvas size, the source at 1/k its size in the centre, recipe says k."""
    result = await engine.submit("zoom", outpaint("zoom", source, (SIZE, SIZE), zoom=zoom))
    assert len(result.images) == 4 and (result.width, result.height) == (SIZE, SIZE)
    assert Image.open(io.BytesIO(result.grid)).size == (2 * SIZE, 2 * SIZE)
    assert_source_kept(result, source, "zoom", (SIZE, SIZE), "ltrb", zoom=zoom)
    assert f"Zoom: {zoom:g}," in read_parameters(result.images[0])
    assert f"Zoom: {zoom:g}," in read_parameters(result.grid)


@pytest.mark.parametrize(("pan", "canvas", "seam_sides"), [("right", (192, 128), "r"), ("up", (128, 192), "t")])
async def test_pan_keeps_the_source_on_the_opposite_edge(engine, source, pan, canvas, seam_sides):
    """Pan right / up: a canvas 1.5x wide / high, the source's pixels kept on the left / bottom edge."""
    result = await engine.submit("pan", outpaint("pan", source, canvas, pan=pan))
    assert len(result.images) == 4 and (result.width, result.height) == canvas
    assert outpaint_box("pan", (SIZE, SIZE), canvas, pan=pan)[:2] == ((0, 0) if pan == "right" else (0, 64))
    assert_source_kept(result, source, "pan", canvas, seam_sides, pan=pan)
    assert f"Pan: {pan}," in read_parameters(result.images[3])


async def test_a_dedicated_inpainting_model_outpaints(tiny_model, source, tmp_path):
    """IMAGINE_INPAINT_MODEL loads engine.tiny's 9-channel inpainting pipeline once; a pan runs on it and says so."""
    folder = write_tiny_pipeline(tmp_path / "tiny-inpaint", inpaint=True)
    settings = EngineSettings.from_env({"IMAGINE_MODEL": str(tiny_model), "IMAGINE_DEVICE": "cpu",
                                        "IMAGINE_INPAINT_MODEL": str(folder)})
    engine = Engine(settings)
    await engine.start()
    try:
        result = await engine.submit("pan", outpaint("pan", source, (192, 128), pan="right"))
        inpaint = engine._runner.inpaint  # the test looks inside: which UNet painted
    finally:
        await engine.stop()
    assert type(inpaint).__name__ == "StableDiffusionInpaintPipeline" and inpaint.unet.config.in_channels == 9
    assert len(result.images) == 4 and (result.width, result.height) == (192, 128)
    assert_source_kept(result, source, "pan", (192, 128), "r", pan="right")
    assert f"Pan: right, Inpaint model: {folder}," in read_parameters(result.images[0])


async def test_cancel_stops_an_outpaint_between_steps(engine, source):
    """An outpaint reports progress with previews like the other jobs, and a cancel stops it between two steps."""
    seen: list[Progress] = []

    def on_progress(progress: Progress) -> None:
        seen.append(progress)
        if progress.step == 2:
            assert engine.cancel("long") is True

    with pytest.raises(JobCancelled):
        await engine.submit("long", outpaint("zoom", source, (SIZE, SIZE), steps=40, zoom=2.0), on_progress)
    assert 2 <= seen[-1].step < seen[-1].total
    assert seen[1].preview is not None  # preview_every=2 in the engine fixture


def test_outpaint_box_centres_a_zoom_even_on_another_aspect():
    """Zoom: the source at round(W/k) x round(H/k), centred, also in a canvas of another aspect; too big: refused."""
    assert outpaint_box("zoom", (512, 512), (512, 512), zoom=2) == (128, 128, 256, 256)
    assert outpaint_box("zoom", (512, 512), (512, 512), zoom=1.5) == (85, 85, 341, 341)
    assert outpaint_box("zoom", (512, 384), (384, 512), zoom=2) == (64, 160, 256, 192)  # --ar 3:4 around a 4:3
    with pytest.raises(ValueError, match="does not fit in the canvas 680x384"):
        outpaint_box("zoom", (512, 512), (680, 384), zoom=1.1)


def test_outpaint_box_puts_a_pan_against_the_opposite_edge_scaled_to_the_canvas():
    """Pan: flush against the edge opposite the direction; a canvas scaled down to fit max_side scales the source."""
    assert outpaint_box("pan", (512, 512), (768, 512), pan="right") == (0, 0, 512, 512)
    assert outpaint_box("pan", (512, 512), (768, 512), pan="left") == (256, 0, 512, 512)
    assert outpaint_box("pan", (512, 512), (512, 768), pan="down") == (0, 0, 512, 512)
    assert outpaint_box("pan", (512, 512), (512, 768), pan="up") == (0, 256, 512, 512)
    # 1024x768 panned right is 1536x768; with max_side 1024 the bot asks for 1024x512: the source at 2/3.
    assert outpaint_box("pan", (1024, 768), (1024, 512), pan="right") == (0, 0, 683, 512)
    with pytest.raises(ValueError, match="needs a canvas larger than the source"):
        outpaint_box("pan", (512, 512), (512, 512), pan="left")
