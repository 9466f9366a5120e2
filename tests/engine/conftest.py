"""Shared fixtures: the tiny model written once per session, and a started Engine on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import Engine, EngineSettings


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random Stable Diffusion pipeline folder (no safety checker), written once per test session."""
    from engine.tiny import write_tiny_pipeline

    return write_tiny_pipeline(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_model_nsfw(tmp_path_factory) -> Path:
    """The tiny pipeline with a safety checker that flags every image."""
    from engine.tiny import write_tiny_pipeline

    return write_tiny_pipeline(tmp_path_factory.mktemp("tiny-model-nsfw"), safety_checker=True, flag_everything=True)


@pytest.fixture
async def engine(tiny_model):
    """A started Engine on the tiny model, on CPU, with a preview every 2 steps; stopped afterwards."""
    engine = Engine(EngineSettings(model=str(tiny_model), device="cpu", preview_every=2))
    await engine.start()
    yield engine
    await engine.stop()
