"""/imagine end to end: the real bot, the tiny model and discord.py over loopback to the Discord stand-in."""

from __future__ import annotations

import io

from PIL import Image

from engine.images import read_parameters

GRID_TIMEOUT = 60


def has_grid(message) -> bool:
    return any(a.filename.endswith("grid.png") for a in message.attachments)


def picture(message):
    return Image.open(io.BytesIO(message.attachments[0].data))


async def test_imagine_defers_then_posts_a_grid_with_nine_buttons(discord, bot):
    """/imagine is acknowledged within 3 s, shows progress, and ends with a 2x2 grid PNG, its recipe and 9 buttons."""
    run = await discord.slash(discord.alice, "general", "imagine", prompt="a red fox in snow --seed 42")

    ack = await run.acked()
    assert ack.deferred and ack.elapsed < 3
    message = await run.wait_for(has_grid, timeout=GRID_TIMEOUT)

    assert not message.ephemeral
    assert picture(message).size == (128, 128)  # four 64x64 images
    assert [b.get("label") or b["emoji"]["name"] for b in message.buttons] == [
        "U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"
    ]
    embed = message.embeds[0]
    assert "a red fox in snow" in embed["description"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Seeds"] == "42, 43, 44, 45"
    assert fields["Size"] == "64×64"
    assert any("Waiting to start" in v.content for v in message.history)
    assert any("step" in v.content for v in message.history), "progress was never shown"
