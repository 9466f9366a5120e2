"""The Discord side stays free of the GPU stack."""

from __future__ import annotations

import ast
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


def test_what_a_job_looks_like_imports_no_cog_and_nothing_that_leads_back_to_it():
    """bot/render.py and bot/views.py import no cog, and no module they import (TYPE_CHECKING imports included)
    imports them back: the layers point one way (STYLE.md), the import circle through render is open."""
    graph = {}
    for path in (REPO / "bot").rglob("*.py"):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bot"):
                imported |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names if alias.name.startswith("bot")}
        graph[module] = imported

    def reachable(start):
        seen, todo = set(), [start]
        while todo:
            for name in graph.get(todo.pop(), ()):
                if name in graph and name not in seen:
                    seen.add(name)
                    todo.append(name)
        return seen

    for module in ("bot.render", "bot.views"):
        below = reachable(module)
        assert not any(name.startswith("bot.cogs") for name in below), (module, sorted(below))
        assert module not in below, f"{module} imports itself back through {sorted(below)}"
