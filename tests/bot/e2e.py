"""What end-to-end tests look for in the messages the bot posts."""

from __future__ import annotations

import io
import re

from PIL import Image

from engine.images import read_parameters

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


def recipe(message) -> dict[str, str]:
    """The recipe in the posted picture's "parameters" chunk, read as A1111-style tools do: the prompt, the
    negative prompt, then `Key: value, ...` (a value with commas in double quotes)."""
    text = read_parameters(message.attachments[0].data)
    assert text is not None, f"{message.attachments[0].filename} carries no recipe"
    *prompt, settings = text.split("\n")
    found = {"prompt": prompt[0]}
    if len(prompt) > 1:
        found["Negative prompt"] = prompt[1].removeprefix("Negative prompt: ")
    found |= dict(re.findall(r'([A-Z][\w ]*): ("[^"]*"|[^,]*)(?:, |$)', settings))
    return found
