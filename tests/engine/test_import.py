"""The bot imports engine's API; that must not pull in torch or diffusers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_engine_does_not_import_torch():
    """`import engine` (and engine.images) loads neither torch nor diffusers."""
    code = ("import engine, engine.images, sys; from engine import Engine, Request, Result, Progress, ModelDefaults, "
            "JobFailed, JobCancelled, EngineSettings; "
            "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, 'torch or diffusers imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
