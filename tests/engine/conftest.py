"""A started Engine on the tiny model (written once per session by tests/conftest.py)."""

from __future__ import annotations

import pytest

from engine import Engine, EngineSettings


@pytest.fixture
async def engine(tiny_model):
    """A started Engine on the tiny model, on CPU, with a preview every 2 steps; stopped afterwards."""
    engine = Engine(EngineSettings(model=str(tiny_model), device="cpu", preview_every=2))
    await engine.start()
    yield engine
    await engine.stop()
