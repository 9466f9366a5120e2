"""Image prompts end to end: /imagine with an `image` attachment, through the real bot on the stand-in."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

from bot.image_prompt import fit
from engine.batching import recipe_key
from tests.bot.e2e import GRID_TIMEOUT, has_grid, picture, recipe


def png(size: tuple[int, int], colour: str, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=format)
    return buffer.getvalue()


async def test_an_image_prompt_starts_from_the_attachment_and_its_reroll_from_the_same_picture(discord, bot):
    """With an image the grid has the picture's aspect, its recipe the --iw strength, and depends on the picture."""
    white = await discord.slash(discord.alice, "general", "imagine", prompt="a fox --seed 7 --iw 3",
                                image=("fox.png", png((96, 64), "white")))
    assert (await white.acked()).elapsed < 3
    grid = await white.wait_for(has_grid, GRID_TIMEOUT)
    night = await discord.slash(discord.bob, "general", "imagine", prompt="a fox --seed 7 --iw 3",
                                image=("night.jpg", png((96, 64), "black", "JPEG")))
    black = await night.wait_for(has_grid, GRID_TIMEOUT)

    assert picture(grid).size == (160, 128)  # four 80x64 cells: wide like the picture (64 px is the least side)
    assert (recipe(grid)["Image weight"], recipe(grid)["Denoising strength"], recipe(grid)["Size"]) == (
        "3", "0.3", "80x64")
    assert "from your image" in grid.content
    assert {f["name"]: f["value"] for f in grid.embeds[0]["fields"]}["Image weight"] == "--iw 3 · strength 0.3"
    assert picture(grid).tobytes() != picture(black).tobytes(), "same prompt and seeds: only the picture differs"

    reroll = await (await discord.click(discord.alice, grid, "🔄")).wait_for(has_grid, GRID_TIMEOUT)
    assert (recipe(reroll)["Image weight"], recipe(reroll)["Denoising strength"]) == ("3", "0.3")
    assert "Reroll" in reroll.content and "from your image" in reroll.content


async def test_ar_crops_the_picture_and_iw_defaults_to_one(discord, bot):
    """--ar 1:1 on a wide picture gives square cells, and without --iw the strength is 0.7 (--iw 1)."""
    run = await discord.slash(discord.alice, "general", "imagine", prompt="a fox --ar 1:1",
                              image=("wide.webp", png((300, 100), "red", "WEBP")))
    grid = await run.wait_for(has_grid, GRID_TIMEOUT)
    assert picture(grid).size == (128, 128)
    assert recipe(grid)["Denoising strength"] == "0.7"


async def test_bad_attachments_are_refused_privately_and_nothing_is_queued(discord, bot):
    """A text file, a 5000 px image, a GIF, a corrupt PNG, a decompression bomb, --iw 4, and --iw without an image
    each get a private refusal."""
    whole = png((64, 64), "white")
    cases = [
        (("notes.txt", b"just some words\n"), "a fox", "is not an image"),
        (("huge.png", png((5000, 40), "white")), "a fox", "5000×40 px; image prompts may be at most 4096 px a side"),
        (("fox.gif", png((8, 8), "white", "GIF")), "a fox", "is a GIF image; attach a PNG, JPEG or WebP picture"),
        (("broken.png", whole[: len(whole) // 2]), "a fox", "damaged or incomplete"),
        (("bomb.png", _bomb(100_000)), "a fox", "has far too many pixels"),
        (("fox.png", whole), "a fox --iw 4", "Image weight (--iw) must be from 0 to 3"),
        (None, "a fox --iw 2", "`--iw` sets how closely the result keeps an image prompt"),
    ]
    for attachment, prompt, refusal in cases:
        options = {"image": attachment} if attachment else {}
        run = await discord.slash(discord.alice, "general", "imagine", prompt=prompt, **options)
        assert (await run.acked()).elapsed < 3
        message = await run.wait_for(lambda m: m.ephemeral)
        assert refusal in message.content, message.content

    assert await bot.store.unfinished_jobs() == []
    assert not any(m.content and "a fox" in m.content for m in discord.messages("general") if not m.ephemeral)


def _bomb(side: int) -> bytes:
    """A few hundred bytes of PNG that claim side×side pixels: decoding it would take gigabytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
            + chunk(b"IEND", b""))


def test_fit_centre_crops_to_the_size_asked_for():
    """A wide picture fitted to a square keeps its centre: the red middle stays, the blue sides are cut off."""
    wide = Image.new("RGB", (300, 100), "blue")
    wide.paste(Image.new("RGB", (100, 100), "red"), (100, 0))
    fitted = Image.open(io.BytesIO(fit(wide, 64, 64)))
    assert fitted.size == (64, 64)
    assert fitted.convert("RGB").getcolors() == [(64 * 64, (255, 0, 0))]


def test_an_image_prompt_never_shares_a_call_with_text_to_image():
    """The batch key puts an image prompt with image-to-image jobs of its strength, never with text to image."""
    text = {"width": 64, "height": 64, "steps": 4, "guidance": 7.0, "seeds": [1, 2, 3, 4]}
    prompted = text | {"image_prompt": "0" * 64, "strength": 0.7}
    assert recipe_key("imagine", prompted) != recipe_key("imagine", text)
    assert recipe_key("reroll", prompted) == recipe_key("variation", text | {"strength": 0.7})
