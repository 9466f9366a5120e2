"""What end-to-end tests look for in the messages the bot posts."""

from __future__ import annotations

import io

from PIL import Image

GRID_TIMEOUT = 60  # generous: CI machines are shared and slow


def has_grid(message) -> bool:
    return any(a.filename.endswith("grid.png") for a in message.attachments)


def has_upscale(message) -> bool:
    return any(a.filename.endswith("upscale.png") for a in message.attachments)


def picture(message) -> Image.Image:
    return Image.open(io.BytesIO(message.attachments[0].data))


def job_id(message) -> int:
    """The job behind a message, read from its buttons' custom ids (imagine:<action>:<job>:<n>)."""
    return int(message.buttons[0]["custom_id"].split(":")[2])
