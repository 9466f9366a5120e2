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


def test_the_ray_client_needs_no_gpu_stack():
    """With IMAGINE_BACKEND=ray the bot builds its Ray client (and the deployment it would deploy) without torch or
    diffusers: a GPU-less bot host needs only the ray extra."""
    code = (
        "import sys\n"
        "from bot import config\n"
        "from bot.__main__ import backend\n"
        "settings = config.Settings.from_env({'DISCORD_TOKEN': 't', 'IMAGINE_BACKEND': 'ray', 'RAY_ADDRESS': 'x:1'})\n"
        "client = backend(settings, None)\n"
        "assert type(client).__name__ == 'RayBackend', client\n"
        "import engine.serve, engine.protocol\n"
        "heavy = sorted(n for n in ('torch', 'diffusers', 'transformers') if n in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
