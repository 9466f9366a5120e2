"""The stand-in's own tests use its fixture directly (the project registers it in tests/conftest.py)."""

from tests.discord_standin.plugin import discord  # noqa: F401  (a fixture)
