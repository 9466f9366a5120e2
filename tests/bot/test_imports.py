"""The Discord side stays free of the GPU stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bot_modules_never_import_torch_or_diffusers():
    """Importing every bot module (the engine's API included) loads neither torch nor diffusers."""
    code = (
        "import sys, pkgutil, importlib, bot, bot.cogs\n"
        "for m in pkgutil.walk_packages(bot.__path__, 'bot.'):\n"
        "    importlib.import_module(m.name)\n"
        "heavy = sorted(n for n in ('torch', 'diffusers', 'transformers') if n in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
