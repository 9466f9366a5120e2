"""Slash-command options whose choices are known only once the backend has started: the configured models."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from discord import app_commands

MAX_CHOICES = 25  # Discord's most for one option


def offer_models(command: app_commands.Command, option: str, names: Sequence[str]) -> None:
    """Give `command`'s `option` the configured model names as its choices, or take the option away when there is
    one model (there is nothing to choose).

    discord.py reads choices from decorators when a class is defined, before the settings are read, and has no
    public way to change them later; so this changes the command object of one Cog instance (each instance copies
    its commands and their option table, so the class's command stays as defined). Called from the Cog's
    __init__, before the tree is synced: the synced definition then carries the choices. With more than 25 models
    the first 25 are offered; `--model` in the prompt takes any of them.
    """
    parameters = command._params  # noqa: SLF001 - no public setter (discord.py issue #7539)
    if len(names) < 2:
        parameters.pop(option)
        return
    parameter = copy.copy(parameters[option])  # the class's command shares this object
    parameter.choices = [app_commands.Choice(name=name, value=name) for name in names[:MAX_CHOICES]]
    parameters[option] = parameter
