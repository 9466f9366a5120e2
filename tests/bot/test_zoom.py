"""Zoom Out, Pan and Custom Zoom on an upscale, end to end through the real bot and the tiny model on the stand-in."""

from __future__ import annotations

import pytest
from PIL import Image, ImageChops

from bot.admission import Refused, fit_canvas
from engine.jobs import outpaint_box, size_for_aspect
from tests.bot.e2e import GRID_TIMEOUT, has_grid, has_upscale, picture, recipe

SIDE = 64  # IMAGINE_SIZE of the end-to-end runs: the grid's cells, and so the source of a zoom or pan
SEAM = 16  # px of the kept area next to the new one that the inpainting may repaint (its overlap and feather)
TOLERANCE = 2  # most any channel of a kept pixel may differ from the source's (the source is pasted back as is)


def cells(message) -> list[Image.Image]:
    """The four cells of a posted 2x2 grid, in reading order."""
    grid = picture(message).convert("RGB")
    width, height = grid.width // 2, grid.height // 2
    return [grid.crop((x * width, y * height, (x + 1) * width, (y + 1) * height)) for y in (0, 1) for x in (0, 1)]


def fields(message) -> dict[str, str]:
    return {f["name"]: f["value"] for f in message.embeds[0]["fields"]}


def jump_url(discord, message) -> str:
    return f"https://discord.com/channels/{discord.guild.id}/{message.channel_id}/{message.id}"


async def upscaled(discord, prompt="a red fox in snow --seed 42"):
    """A grid, and U1 of it: the upscale whose buttons zoom and pan, and the grid cell they start from."""
    grid = await (await discord.slash(discord.alice, "general", "imagine", prompt=prompt)).wait_for(
        has_grid, GRID_TIMEOUT)
    upscale = await (await discord.click(discord.alice, grid, "U1")).wait_for(has_upscale, GRID_TIMEOUT)
    return cells(grid)[0], upscale


async def made_by(discord, message, button):
    click = await discord.click(discord.alice, message, button)
    assert (await click.acked()).elapsed < 3
    return await click.wait_for(has_grid, GRID_TIMEOUT)


def assert_kept(cell: Image.Image, source: Image.Image, pan: str) -> None:
    """The source's own pixels are in the cell where outpaint_box puts them, but for the seam next to the new area."""
    left, top, width, height = outpaint_box("pan", source.size, cell.size, pan=pan)
    assert (width, height) == source.size  # the canvas was not scaled down: the source keeps its size
    kept = {"right": (0, 0, width - SEAM, height), "up": (0, SEAM, width, height)}[pan]
    inside = (kept[0] + left, kept[1] + top, kept[2] + left, kept[3] + top)
    difference = ImageChops.difference(cell.crop(inside), source.crop(kept))
    assert max(high for _, high in difference.getextrema()) <= TOLERANCE, difference.getextrema()


async def test_zoom_out_and_pan_make_grids_of_the_right_size_that_keep_the_source(discord, bot):
    """Zoom Out 2x and 1.5x give 4 cells of the source's grid size; ➡️ and ⬆️ give cells 1.5x wider or taller that
    keep the source's pixels (within TOLERANCE, the seam excluded); each says what it is, links to the upscale,
    and 🔄 on a pan repeats that pan with new seeds."""
    source, upscale = await upscaled(discord)
    assert source.size == (SIDE, SIDE)

    for button, zoom in [("Zoom Out 2x", "2"), ("Zoom Out 1.5x", "1.5")]:
        zoomed = await made_by(discord, upscale, button)
        assert [cell.size for cell in cells(zoomed)] == [(SIDE, SIDE)] * 4
        assert f"Zoom Out {zoom}x" in zoomed.content and zoomed.embeds[0]["author"]["name"].startswith(
            f"Zoom Out {zoom}x")
        assert jump_url(discord, upscale) in fields(zoomed)["From"]
        assert recipe(zoomed)["Zoom"] == zoom and recipe(zoomed)["Size"] == f"{SIDE}x{SIDE}"
        assert [b.get("label") or b["emoji"]["name"] for b in zoomed.buttons] == [
            "U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"]  # an ordinary grid

    right = await made_by(discord, upscale, "➡️")
    up = await made_by(discord, upscale, "⬆️")
    assert [cell.size for cell in cells(right)] == [(SIDE * 3 // 2, SIDE)] * 4
    assert [cell.size for cell in cells(up)] == [(SIDE, SIDE * 3 // 2)] * 4
    for cell in cells(right):
        assert_kept(cell, source, "right")
    for cell in cells(up):
        assert_kept(cell, source, "up")
    assert "Pan ➡️" in right.content and "Pan ⬆️" in up.content and recipe(right)["Pan"] == "right"
    assert jump_url(discord, upscale) in fields(right)["From"]

    again = await made_by(discord, right, "🔄")
    assert "Pan ➡️" in again.content and recipe(again)["Pan"] == "right"
    assert [cell.size for cell in cells(again)] == [(SIDE * 3 // 2, SIDE)] * 4
    assert set(fields(again)["Seeds"].split(", ")).isdisjoint(fields(right)["Seeds"].split(", "))
    for cell in cells(again):
        assert_kept(cell, source, "right")  # still the upscale's source, not the pan's own cells


async def test_custom_zoom_and_remix_take_an_edited_prompt_and_refuse_what_is_not_allowed(discord, bot):
    """Custom Zoom's modal holds the prompt with --zoom 2; an edited prompt, zoom and --ar reach the new job's PNG
    recipe and reshape its canvas, a zoom out of range is refused privately. With Remix on, a pan first opens
    "Remix" and the edited prompt makes the pan; a banned word typed in either modal is refused privately."""
    source, upscale = await upscaled(discord, prompt="a red fox --no text")

    custom = await discord.click(discord.alice, upscale, "Custom Zoom")
    modal = await custom.opened_modal()
    assert (await custom.acked()).elapsed < 3 and modal["title"] == "Custom Zoom"
    assert modal["components"][0]["component"]["value"] == "a red fox --ar 1:1 --no text --zoom 2"
    zoomed = await (await discord.submit_modal(custom, {"prompt": "a blue fox --ar 16:9 --no text --zoom 1.5"})
                    ).wait_for(has_grid, GRID_TIMEOUT)
    made, (width, height) = recipe(zoomed), size_for_aspect(SIDE, "16:9")
    assert (made["prompt"], made["Negative prompt"], made["Zoom"], made["Size"]) == (
        "a blue fox", "text", "1.5", f"{width}x{height}")
    assert [cell.size for cell in cells(zoomed)] == [(width, height)] * 4 and "Zoom Out 1.5x" in zoomed.content

    too_far = await discord.click(discord.alice, upscale, "Custom Zoom")
    await too_far.opened_modal()
    refusal = await (await discord.submit_modal(too_far, {"prompt": "a red fox --zoom 3"})).wait_for(
        lambda m: "zoom" in m.content.lower())
    assert refusal.ephemeral and "more than 1 and at most 2" in refusal.content

    await bot.store.set_preferences(discord.guild.id, discord.alice.id, remix=True)
    pan = await discord.click(discord.alice, upscale, "➡️")
    modal = await pan.opened_modal()
    assert (await pan.acked()).elapsed < 3 and modal["title"] == "Remix"
    assert modal["components"][0]["component"]["value"] == "a red fox --ar 1:1 --no text"
    remixed = await (await discord.submit_modal(pan, {"prompt": "a green fox at dawn --no text"})).wait_for(
        has_grid, GRID_TIMEOUT)
    assert (recipe(remixed)["prompt"], recipe(remixed)["Pan"]) == ("a green fox at dawn", "right")
    assert "Pan ➡️" in remixed.content and "Remix" in remixed.content
    assert [cell.size for cell in cells(remixed)] == [(SIDE * 3 // 2, SIDE)] * 4

    await bot.store.add_banned_word(discord.guild.id, "wolf")
    zoom = await discord.click(discord.alice, upscale, "Zoom Out 2x")
    await zoom.opened_modal()
    refused = await discord.submit_modal(zoom, {"prompt": "a grey wolf"})
    refusal = await refused.wait_for(lambda m: "wolf" in m.content)
    assert refusal.ephemeral and all(m.ephemeral for m in refused.messages)
    custom = await discord.click(discord.alice, upscale, "Custom Zoom")
    await custom.opened_modal()
    refused = await discord.submit_modal(custom, {"prompt": "a wolf --zoom 1.5"})
    refusal = await refused.wait_for(lambda m: "wolf" in m.content)
    assert refusal.ephemeral and all(m.ephemeral for m in refused.messages)
    assert await bot.store.unfinished_jobs() == []


def test_a_canvas_too_big_for_the_channel_is_scaled_down_and_a_source_that_cannot_fit_is_refused():
    """A canvas over max_side shrinks as a whole (multiples of 8); a zoom whose source can't fit says what to do."""
    pan = {"width": 768, "height": 512, "source_width": 512, "source_height": 512, "pan": "right"}
    assert fit_canvas("pan", pan, 1024) == pan
    assert (fit_canvas("pan", pan, 600)["width"], fit_canvas("pan", pan, 600)["height"]) == (600, 400)
    assert outpaint_box("pan", (512, 512), (600, 400), pan="right") == (0, 0, 400, 400)
    zoom = {"width": 680, "height": 384, "source_width": 512, "source_height": 512, "zoom": 1.2}
    with pytest.raises(Refused, match=r"At --zoom 1.2 the picture doesn't fit in a 680×384 canvas; zoom out"):
        fit_canvas("zoom", zoom, 1024)
    assert fit_canvas("zoom", zoom | {"zoom": 2.0}, 1024)["width"] == 680
